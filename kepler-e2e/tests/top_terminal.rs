//! `kepler top` in a real terminal: tmux runs it, `send-keys` types and
//! `capture-pane` reads the screen. Each test has a tmux server of its own.

use std::process::Command;
use std::time::Duration;

use kepler_e2e::{wait_until, Kepler, DEADLINE};

const TICKER: &str = r#"
kepler:
  metrics:
    interval: 200ms
services:
  ticker:
    command: ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"]
  other:
    command: ["sleep", "1000"]
"#;

/// A tmux server and session running `kepler top`, killed when dropped.
struct Screen {
    socket: String,
}

impl Screen {
    /// Runs `kepler top` in a 120x40 terminal; the shell says how it ended
    /// and stays, so the screen can be read after top has gone.
    fn top(kepler: &Kepler, name: &str) -> Screen {
        Screen::top_with(kepler, name, "")
    }

    /// `kepler top` with `env` (`K=V ...`) in its environment.
    fn top_with(kepler: &Kepler, name: &str, env: &str) -> Screen {
        let socket = format!("kepler-e2e-{}-{name}", std::process::id());
        let kepler_bin = kepler_e2e::bin_dir().join("kepler");
        let script = format!(
            "cd {dir} && {env} KEPLER_DAEMON_PATH={state} {kepler} top; echo TOP-EXITED $?; echo STTY $(stty -a | grep -o -- '-\\?icanon'); exec sleep 600",
            dir = kepler.dir().display(),
            state = kepler.state_dir().display(),
            kepler = kepler_bin.display(),
        );
        let screen = Screen { socket };
        screen.tmux(&["new-session", "-d", "-x", "120", "-y", "40", &script]);
        screen
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux (scripts/test-env installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Waits until the screen satisfies `condition` and returns it.
    fn wait_for(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let last = self.capture();
            if condition(&last) {
                return last;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; the screen:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal as top left it: `(alternate screen on, cursor visible)`.
    fn terminal_state(&self) -> (bool, bool) {
        let flags = self.tmux(&["display-message", "-p", "#{alternate_on} #{cursor_flag}"]);
        let mut flags = flags.split_whitespace();
        (flags.next() == Some("1"), flags.next() == Some("1"))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A CPU percentage and a memory size (`512K`, `1.4M`) in a row.
fn has_usage(row: &str) -> bool {
    let memory = |w: &&str| {
        w.len() > 1
            && (w.ends_with('K') || w.ends_with('M'))
            && w[..w.len() - 1].parse::<f64>().is_ok()
    };
    let words: Vec<&str> = row.split_whitespace().collect();
    words.iter().any(|w| w.ends_with('%')) && words.iter().any(memory)
}

fn row<'a>(screen: &'a str, service: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|line| line.contains(&format!(" {service} ")))
}

#[test]
fn top_selects_a_service_shows_its_logs_restarts_it_and_quits_cleanly() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", TICKER);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let old_pid = kepler.service("kepler.yaml", "ticker").pid().unwrap();

    let screen = Screen::top(&kepler, "main");
    let shown = screen.wait_for("both services with CPU and memory", |s| {
        ["ticker", "other"]
            .iter()
            .all(|name| row(s, name).is_some_and(has_usage))
    });
    assert!(
        shown.contains("> other"),
        "the first row is selected:\n{shown}"
    );
    assert_eq!(
        screen.terminal_state(),
        (true, false),
        "full screen, cursor hidden"
    );

    screen.keys(&["j"]);
    screen.wait_for("ticker selected", |s| s.contains("> ticker"));
    screen.keys(&["Enter"]);
    screen.wait_for("the ticker's live logs", |s| {
        s.contains("logs of ticker") && s.lines().filter(|l| l.starts_with("tick ")).count() >= 3
    });
    screen.keys(&["Escape"]);
    screen.wait_for("the log pane closed", |s| !s.contains("logs of ticker"));

    screen.keys(&["r"]);
    screen.wait_for("a confirmation", |s| s.contains("restart ticker? y/n"));
    screen.keys(&["y"]);
    screen.wait_for("the restart done", |s| s.contains("ticker: restart done"));
    wait_until("a new ticker process", DEADLINE, || {
        kepler
            .service("kepler.yaml", "ticker")
            .pid()
            .is_some_and(|pid| pid != old_pid)
    });
    let new_pid = kepler.service("kepler.yaml", "ticker").pid().unwrap();
    screen.wait_for("the new pid on screen", |s| {
        row(s, "ticker").is_some_and(|r| r.contains(&new_pid.to_string()))
    });

    // `x` asks too, and anything but y leaves the service alone.
    screen.keys(&["x"]);
    screen.wait_for("a stop confirmation", |s| s.contains("stop ticker? y/n"));
    screen.keys(&["n"]);
    screen.wait_for("the stop cancelled", |s| {
        s.contains("stop ticker: cancelled")
    });
    assert_eq!(kepler.service("kepler.yaml", "ticker").status(), "running");

    screen.keys(&["q"]);
    screen.wait_for("top gone", |s| s.contains("TOP-EXITED 0"));
    assert_eq!(
        screen.terminal_state(),
        (false, true),
        "main screen, cursor shown"
    );
}

#[test]
fn top_follows_resizes_sorts_filters_and_restores_the_terminal_on_ctrl_c() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", TICKER);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let screen = Screen::top(&kepler, "keys");
    screen.wait_for("both services", |s| {
        row(s, "ticker").is_some() && row(s, "other").is_some()
    });

    screen.tmux(&["resize-window", "-x", "80", "-y", "15"]);
    let small = screen.wait_for("the 80x15 layout", |s| {
        s.lines().count() <= 15 && s.contains("sort: name") && row(s, "ticker").is_some()
    });
    assert!(small.lines().all(|l| l.chars().count() <= 80), "{small}");

    screen.keys(&["s"]);
    screen.wait_for("sorted by status", |s| s.contains("sort: status"));
    screen.keys(&["/", "t", "i", "c", "Enter"]);
    let filtered = screen.wait_for("only the ticker", |s| {
        s.contains("filter: tic") && row(s, "ticker").is_some() && row(s, "other").is_none()
    });
    assert!(filtered.contains("2 services"), "{filtered}");

    screen.keys(&["C-c"]);
    screen.wait_for("top gone", |s| s.contains("TOP-EXITED 0"));
    assert_eq!(screen.terminal_state(), (false, true));
}

#[test]
fn a_panic_in_top_restores_the_terminal() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", TICKER);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let screen = Screen::top_with(&kepler, "panic", "RUST_BACKTRACE=0 KEPLER_TEST_TOP_PANIC=1");
    // Rust exits with 101 after a panic.
    let text = screen.wait_for("top gone", |s| s.contains("TOP-EXITED 101"));
    assert!(text.contains("KEPLER_TEST_TOP_PANIC is set"), "{text}");
    assert_eq!(
        screen.terminal_state(),
        (false, true),
        "main screen, cursor shown"
    );
    // Line editing is back: raw mode was left.
    let text = screen.wait_for("stty's answer", |s| s.contains("STTY "));
    assert!(text.contains("STTY icanon"), "{text}");
}

#[test]
fn top_once_lists_every_service_with_cpu_and_memory() {
    let kepler = Kepler::started();
    let services: String = (0..12)
        .map(|i| format!("  svc{i:02}:\n    command: [\"sleep\", \"1000\"]\n"))
        .collect();
    kepler.write(
        "kepler.yaml",
        &format!("kepler:\n  metrics:\n    interval: 100ms\nservices:\n{services}"),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let mut last = String::new();
    wait_until("every service sampled in top --once", DEADLINE, || {
        let run = kepler.kepler(&["top", "--once"]);
        run.success();
        last = run.stdout;
        (0..12).all(|i| {
            row(&last, &format!("svc{i:02}")).is_some_and(|r| r.contains("running") && has_usage(r))
        })
    });
    assert!(last.contains("CPU") && last.contains("MEM"), "{last}");
    assert!(!last.contains('\u{1b}'), "no escape codes: {last:?}");
    // --all needs no config file.
    let all = kepler.run(
        kepler
            .command("kepler")
            .current_dir("/")
            .args(["top", "--once", "--all"]),
        &["top", "--once", "--all"],
    );
    all.success().stdout_has("CONFIG").stdout_has("svc11");
}
