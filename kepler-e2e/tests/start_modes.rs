//! `start` attached, `-d`, `-d --wait [--timeout]`, and `ps`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use kepler_e2e::terminal::Terminal;
use kepler_e2e::{group_alive, Kepler, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn attached_start_streams_output_and_exits_once_everything_has_settled() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  one:\n    command: [\"sh\", \"-c\", \"echo hello from one\"]\n  two:\n    command: [\"sh\", \"-c\", \"echo oops >&2; exit 3\"]\n    depends_on:\n      one:\n        condition: service_completed_successfully\n",
    );
    let run = kepler.kepler(&["start"]);
    run.success()
        .stdout_has("one | hello from one")
        .stdout_has("two | oops")
        .stdout_has("kepler | two exited (3)");
    let first = run.stdout.find("hello from one").unwrap();
    assert!(run.stdout.find("two | oops").unwrap() > first, "{run}");
}

#[test]
fn ctrl_c_stops_the_attached_services_and_waits_for_them() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [\"sh\", \"-c\", \"trap 'echo web got TERM; exit 0' TERM; echo web ready; while :; do sleep 0.05; done\"]\n",
    );
    let mut child = kepler
        .command("kepler")
        .arg("start")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_line = |needle: &str| loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
        if line.contains(needle) {
            return;
        }
    };
    wait_line("web ready");
    let pid = kepler.service("kepler.yaml", "web").pid().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    wait_line("web got TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!group_alive(pid));
    assert_eq!(kepler.service("kepler.yaml", "web").status(), "stopped");
}

#[test]
fn wait_fails_naming_the_service_that_failed_during_startup() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  db:\n    command: [sleep, '1000']\n  api:\n    command: [\"./missing-server\"]\n    depends_on: [db]\n",
    );
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has("`api` failed during startup")
        .stderr_has("missing-server");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn wait_timeout_fails_listing_what_was_not_ready() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [sleep, '1000']\n  app:\n    command: [sleep, '1000']\n    depends_on:\n      job:\n        condition: service_completed_successfully\n",
    );
    let started = std::time::Instant::now();
    kepler
        .kepler(&["start", "-d", "--wait", "--timeout", "400ms"])
        .failure()
        .stderr_has("timed out")
        .stderr_has("`app`");
    assert!(started.elapsed() < Duration::from_secs(5));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn wait_says_which_services_it_started_and_which_it_deferred() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:
  db:
    command: [sleep, '1000']
  web:
    command: [sleep, '1000']
    depends_on: [db]
  monitor:
    command: [sleep, '1000']
    depends_on:
      web:
        condition: service_failed
",
    );
    let run = kepler.kepler(&["start", "-d", "--wait"]);
    run.success();
    assert_eq!(
        run.stdout, "started 2 services (db, web); 1 deferred (monitor)\n",
        "{run}"
    );
    let run = kepler.kepler(&["restart", "-d", "--wait", "web"]);
    run.success();
    assert_eq!(run.stdout, "restarted 1 service (web)\n", "{run}");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn detached_start_returns_before_the_services_are_up() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"sleep 0.5\"]\n  app:\n    command: [sleep, '1000']\n    depends_on:\n      job:\n        condition: service_completed_successfully\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    assert_eq!(kepler.service("kepler.yaml", "app").status(), "starting");
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn starting_one_service_starts_what_it_depends_on_only() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  db:\n    command: [sleep, '1000']\n  web:\n    command: [sleep, '1000']\n    depends_on: [db]\n  other:\n    command: [sleep, '1000']\n",
    );
    kepler.kepler(&["start", "-d", "--wait", "web"]).success();
    let ps = kepler.ps("kepler.yaml");
    assert_eq!(ps["db"].status(), "running");
    assert_eq!(ps["web"].status(), "running");
    assert_eq!(ps["other"].status(), "stopped");
    kepler.kepler(&["stop", "web"]).success();
    assert_eq!(kepler.service("kepler.yaml", "db").status(), "running");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn unknown_service_names_are_refused_listing_the_real_ones() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  db:\n    command: [sleep, '1000']\n",
    );
    kepler
        .kepler(&["start", "-d", "dbb"])
        .failure()
        .stderr_has("no service named `dbb`")
        .stderr_has("db");
}

#[test]
fn ps_all_and_json_cover_every_loaded_config() {
    let kepler = Kepler::started();
    kepler.write(
        "a/kepler.yaml",
        "services:\n  alpha:\n    command: [sleep, '1000']\n",
    );
    kepler.write(
        "b/kepler.yaml",
        "services:\n  beta:\n    command: [\"sh\", \"-c\", \"exit 2\"]\n",
    );
    kepler
        .kepler(&["-f", "a/kepler.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler(&["-f", "b/kepler.yaml", "start", "-d"])
        .success();
    kepler.wait_for_service("b/kepler.yaml", "beta", "exited", |r| {
        r.status() == "exited"
    });
    let table = kepler.kepler(&["ps", "--all"]);
    table
        .success()
        .stdout_has("CONFIG")
        .stdout_has("alpha")
        .stdout_has("running")
        .stdout_has("beta")
        .stdout_has("exited (2)");
    let json = kepler.kepler(&["ps", "--all", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    let beta = rows.iter().find(|r| r["service"] == "beta").unwrap();
    assert_eq!(beta["exit_code"], 2);
    assert!(beta["config"].as_str().unwrap().ends_with("b/kepler.yaml"));
    let alpha = rows.iter().find(|r| r["service"] == "alpha").unwrap();
    assert!(alpha["pid"].as_u64().is_some());
    kepler.kepler(&["-f", "a/kepler.yaml", "stop"]).success();
}

/// db becomes healthy once `db-ready` exists; web waits for that.
const HEALTH_GATED: &str = "services:
  db:
    command: [sleep, '1000']
    healthcheck:
      test: [\"sh\", \"-c\", \"test -f db-ready\"]
      interval: 100ms
  web:
    command: [sleep, '1000']
    depends_on:
      db:
        condition: service_healthy
";

#[test]
fn wait_on_a_terminal_redraws_one_line_per_service_in_place() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", HEALTH_GATED);
    let terminal = Terminal::open(&kepler, 100, 20);
    terminal.type_line("kepler start -d --wait; echo exit=$?");
    // db runs, not yet healthy (its probe fails until db-ready exists).
    let screen = terminal.wait_for_screen("web waiting for db", |rows| {
        rows.iter()
            .any(|r| r.contains("web") && r.contains("waiting for `db` to be healthy"))
    });
    // A spinner turns on lines still on their way.
    let web = screen
        .iter()
        .find(|r| r.contains("waiting for `db`"))
        .unwrap();
    assert!(
        web.starts_with(|c: char| "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ".contains(c)),
        "{screen:?}"
    );
    kepler.write("db-ready", "");
    let screen = terminal.wait_for_screen("the summary", |rows| rows.iter().any(|r| r == "exit=0"));
    let marked = |mark: &str, name: &str| {
        screen
            .iter()
            .filter(|r| r.starts_with(&format!("{mark} {name} ")))
            .count()
    };
    // Each service kept one line, redrawn to its final state.
    assert_eq!(marked("✔", "db "), 1, "{screen:#?}");
    assert_eq!(marked("✔", "web"), 1, "{screen:#?}");
    assert!(
        screen
            .iter()
            .any(|r| r.starts_with("✔ db  healthy (") && r.ends_with("s)")),
        "{screen:#?}"
    );
    assert!(
        screen.iter().any(|r| r.starts_with("✔ web running (")),
        "{screen:#?}"
    );
    assert!(
        !screen.iter().any(|r| r.contains("waiting for")),
        "{screen:#?}"
    );
    assert!(
        screen.iter().any(|r| r == "started 2 services (db, web)"),
        "{screen:#?}"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn wait_prints_one_plain_line_per_change_when_piped() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", HEALTH_GATED);
    let mut child = kepler
        .command("kepler")
        .args(["start", "-d", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |needle: &str| loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line containing {needle:?} in {seen:#?}"));
        seen.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    };
    let waiting = wait_line("web waiting for `db` to be healthy (");
    assert!(waiting.ends_with("s)"), "{waiting}");
    kepler.write("db-ready", "");
    wait_line("db healthy (");
    wait_line("web running (");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "started 2 services (db, web)\n"
    );
    // Plain lines: no escape sequences, no carriage returns, no repeats.
    for line in &seen {
        assert!(!line.contains('\x1b') && !line.contains('\r'), "{line:?}");
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "{seen:#?}");
    kepler.kepler(&["stop"]).success();
}
