//! Restart policies and their backoff, through the real binaries.

use kepler_e2e::Kepler;

fn config(policy: &str, script: &str) -> String {
    format!(
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo $(date +%s%N) >> starts.txt; {script}\"]\n    restart:\n      policy: {policy}\n      delay: 50ms\n      max_delay: 200ms\n"
    )
}

#[test]
fn always_restarts_a_service_that_exits_and_counts_the_restarts() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &config("always", "exit 0"));
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_lines("starts.txt", "four starts", |l| l.len() >= 4);
    let row = kepler.wait_for_service("kepler.yaml", "app", "restarted 3 times", |r| {
        r.restarts() >= 3
    });
    assert!(row.restarts() >= 3);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn on_failure_restarts_only_non_zero_exits() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &config(
            "on-failure",
            "if [ $(wc -l < starts.txt) -lt 3 ]; then exit 1; fi; exit 0",
        ),
    );
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "app", "exited (0)", |r| {
        r.status() == "exited" && r.exit_code() == Some(0)
    });
    assert_eq!(
        row.restarts(),
        2,
        "two failures, two restarts, then a clean exit"
    );
    assert_eq!(
        std::fs::read_to_string(kepler.dir().join("starts.txt"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn no_never_restarts() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &config("no", "exit 4"));
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "app", "exited", |r| r.status() == "exited");
    assert_eq!(row.exit_code(), Some(4));
    assert_eq!(row.restarts(), 0);
    // Attached mode agrees: everything is settled, so it returns at once.
    kepler.kepler(&["ps"]).success().stdout_has("exited (4)");
}

#[test]
fn backoff_doubles_the_delay_up_to_max_delay() {
    let kepler = Kepler::started();
    let config = config("always", "exit 1").replace("max_delay: 200ms", "max_delay: 100ms");
    kepler.write("kepler.yaml", &config);
    kepler.kepler(&["start", "-d"]).success();
    let lines = kepler.wait_for_lines("starts.txt", "eight starts", |l| l.len() >= 8);
    kepler.kepler(&["stop"]).success();
    let starts: Vec<u64> = lines.iter().map(|l| l.trim().parse().unwrap()).collect();
    let mut gaps_ms: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // Delays 50, 100, then 100 (max_delay) each time, plus the time to run
    // the service: the lower bounds are exact, and a load spike can only
    // lengthen a gap. Uncapped, gaps 3 to 7 would be 200 ms to 3.2 s, so
    // their median tells the cap apart under any plausible load.
    assert!(gaps_ms[0] >= 50, "{gaps_ms:?}");
    assert!(gaps_ms[1] >= 100, "doubled: {gaps_ms:?}");
    let capped = &mut gaps_ms[2..];
    assert!(capped.iter().all(|gap| *gap >= 100), "{capped:?}");
    capped.sort_unstable();
    let median = capped[capped.len() / 2];
    assert!(median < 600, "capped at max_delay: {capped:?}");
}

#[test]
fn max_attempts_gives_up_with_a_reason() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"exit 3\"]\n    restart:\n      policy: on-failure\n      delay: 10ms\n      max_attempts: 2\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "app", "failed", |r| r.status() == "failed");
    assert_eq!(row.restarts(), 2);
    assert!(
        row.reason().contains("gave up after 2 restarts"),
        "{:?}",
        row.0
    );
}

#[test]
fn a_missing_binary_fails_with_the_os_error() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"/nonexistent/binary\"]\n",
    );
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has("app")
        .stderr_has("No such file or directory");
    let row = kepler.service("kepler.yaml", "app");
    assert_eq!(row.status(), "failed");
    assert!(row.reason().contains("/nonexistent/binary"), "{:?}", row.0);
}

#[test]
fn a_start_by_the_user_gives_max_attempts_a_fresh_count() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo run >> runs.txt; exit 3\"]\n    restart:\n      policy: on-failure\n      delay: 10ms\n      max_attempts: 1\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(
        row.reason().contains("gave up after 1 restart;"),
        "{:?}",
        row.0
    );
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_lines("runs.txt", "four runs", |l| l.len() == 4);
    kepler.wait_for_service("kepler.yaml", "app", "failed again", |r| {
        r.status() == "failed"
    });
}
