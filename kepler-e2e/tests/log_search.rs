//! `kepler logs --since/--until/--grep/-i`, alone and with `--tail`,
//! `--head`, `--json` and `--follow`, selecting exactly the right lines.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use kepler_e2e::{wait_until, Kepler, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Two lines, then two more once `go` exists, two more once `go2` exists,
/// one more once `go3` exists.
const PHASES: &str = r#"services:
  app:
    command: ["sh", "-c", "echo alpha one; echo alpha two >&2; until [ -f go ]; do sleep 0.02; done; echo beta ERROR three; echo beta four; until [ -f go2 ]; do sleep 0.02; done; echo gamma four; echo gamma five; until [ -f go3 ]; do sleep 0.02; done; echo delta four; exec sleep 1000"]
"#;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The stored time of the line whose text is `text`, from `logs --json`.
fn time_of(kepler: &Kepler, text: &str) -> (String, u64) {
    let json = kepler.logs("kepler.yaml", &["--json"]);
    let line = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["line"] == text)
        .unwrap_or_else(|| panic!("no {text:?} in {json}"));
    let time = line["time"].as_str().unwrap().to_string();
    let at: u64 = time.parse::<humantime::Timestamp>().map_or_else(
        |e| panic!("{time}: {e}"),
        |t| {
            SystemTime::from(t)
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        },
    );
    (time, at)
}

/// The texts `kepler logs <args>` prints, without the `app | ` prefix.
fn texts(kepler: &Kepler, args: &[&str]) -> Vec<String> {
    kepler
        .logs("kepler.yaml", args)
        .lines()
        .map(|l| l.strip_prefix("app | ").unwrap_or(l).to_string())
        .collect()
}

#[test]
fn since_until_and_grep_select_exactly_the_right_lines() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", PHASES);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_log("kepler.yaml", "alpha two");
    let (alpha_two, alpha_two_us) = time_of(&kepler, "alpha two");
    // The two phases a full second apart, so a duration can fall between.
    wait_until("a second after alpha", DEADLINE, || {
        now_us() > alpha_two_us + 1_000_000
    });
    kepler.write("go", "");
    kepler.wait_for_log("kepler.yaml", "beta four");
    let (beta_three, beta_three_us) = time_of(&kepler, "beta ERROR three");

    assert_eq!(
        texts(&kepler, &["--since", &beta_three]),
        ["beta ERROR three", "beta four"]
    );
    assert_eq!(
        texts(&kepler, &["--until", &alpha_two]),
        ["alpha one", "alpha two"]
    );
    assert_eq!(
        texts(&kepler, &["--since", &alpha_two, "--until", &beta_three]),
        ["alpha two", "beta ERROR three"]
    );
    // A duration counts back from now: halfway between the phases.
    let halfway = (alpha_two_us + beta_three_us) / 2;
    let ago = format!("{}ms", (now_us() - halfway) / 1000);
    assert_eq!(
        texts(&kepler, &["--since", &ago]),
        ["beta ERROR three", "beta four"]
    );
    assert_eq!(
        texts(&kepler, &["--until", &ago]),
        ["alpha one", "alpha two"]
    );

    assert_eq!(texts(&kepler, &["--grep", "ERROR"]), ["beta ERROR three"]);
    assert!(texts(&kepler, &["--grep", "error"]).is_empty());
    assert_eq!(
        texts(&kepler, &["--grep", "error", "-i"]),
        ["beta ERROR three"]
    );
    assert_eq!(
        texts(&kepler, &["--grep", "^(alpha|beta) (one|four)$"]),
        ["alpha one", "beta four"]
    );

    // With everything else.
    assert_eq!(
        texts(&kepler, &["--grep", "beta", "--tail", "1"]),
        ["beta four"]
    );
    assert_eq!(
        texts(&kepler, &["--since", &alpha_two, "--head", "1"]),
        ["alpha two"]
    );
    assert_eq!(
        texts(&kepler, &["--since", &alpha_two, "--grep", "o$", "app"]),
        ["alpha two"]
    );
    let json = kepler.logs("kepler.yaml", &["--json", "--grep", "four"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    assert_eq!(lines[0]["line"], "beta four");

    // Bad input is refused, saying why.
    kepler
        .kepler(&["logs", "--grep", "(unclosed"])
        .failure()
        .stderr_has("--grep:");
    kepler
        .kepler(&["logs", "--since", &beta_three, "--until", &alpha_two])
        .failure()
        .stderr_has("--since is after --until");
    kepler
        .kepler(&["logs", "--since", "yesterday"])
        .failure()
        .stderr_has("RFC 3339");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_follow_of_a_search_shows_matching_stored_and_live_lines_and_ends_at_until() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", PHASES);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.write("go", "");
    kepler.wait_for_log("kepler.yaml", "beta four");
    let (alpha_two, _) = time_of(&kepler, "alpha two");

    let mut child = kepler
        .command("kepler")
        .args(["logs", "--follow", "--since", &alpha_two, "--grep", "four"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || lines.recv_timeout(DEADLINE).expect("a followed line");
    assert_eq!(next(), "app | beta four");
    kepler.write("go2", "");
    assert_eq!(next(), "app | gamma four");
    kepler.wait_for_log("kepler.yaml", "gamma five");
    // gamma five was stored but does not match: the next line shown is the
    // next that does.
    kepler.write("go3", "");
    assert_eq!(next(), "app | delta four");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    child.wait().unwrap();

    // A window that has ended: its lines, then the follow ends by itself.
    let run = kepler.kepler(&["logs", "--follow", "--until", &alpha_two]);
    run.success();
    assert_eq!(run.stdout, "app | alpha one\napp | alpha two\n", "{run}");
    kepler.kepler(&["stop"]).success();
}
