//! `restart.watch`: file changes restart a service, once per burst, only for
//! matching paths relative to its working dir.
//!
//! Every service appends a line to `<name>.starts` when it starts, so the
//! number of lines is the number of starts. To show that a change did *not*
//! restart a service, a `sentinel` service that does watch the change is
//! restarted by it first: once the sentinel has reacted, the other service's
//! watcher has seen the same change too.

use std::fs;

use kepler_e2e::Kepler;

fn watched(name: &str, patterns: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    command: [\"sh\", \"-c\", \"echo start >> {name}.starts; exec sleep 1000\"]\n    restart:\n      policy: always\n      watch: {patterns}\n{extra}"
    )
}

fn starts(kepler: &Kepler, name: &str) -> usize {
    fs::read_to_string(kepler.dir().join(format!("{name}.starts")))
        .unwrap_or_default()
        .lines()
        .count()
}

fn wait_for_starts(kepler: &Kepler, name: &str, n: usize) {
    kepler.wait_for_lines(
        &format!("{name}.starts"),
        &format!("{name} started {n} times"),
        |l| l.len() >= n,
    );
}

fn watch_lines(kepler: &Kepler, name: &str) -> usize {
    kepler
        .logs("kepler.yaml", &[name])
        .lines()
        .filter(|l| l.starts_with(&format!("{name}[watch] | ")))
        .count()
}

#[test]
fn a_matching_change_restarts_the_service_and_says_why_in_the_logs() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src/deep")).unwrap();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", r#"["src/**/*.txt"]"#, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    let old = kepler.service("kepler.yaml", "app").pid();

    kepler.write("src/deep/notes.txt", "changed");
    kepler.wait_for_service("kepler.yaml", "app", "running with a new pid", |r| {
        r.status() == "running" && r.pid().is_some() && r.pid() != old
    });
    assert!(!kepler_e2e::process_alive(old.unwrap()));
    wait_for_starts(&kepler, "app", 2);
    let logs = kepler.wait_for_log("kepler.yaml", "app[watch] |");
    assert!(
        logs.contains("app[watch] | files changed (src/deep/notes.txt); restarting"),
        "{logs}"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_change_that_matches_no_pattern_does_not_restart_the_service() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    let mut yaml = String::from("services:\n");
    yaml += &watched("app", r#"["src/**/*.txt"]"#, "");
    yaml += &watched("sentinel", r#"["src/**/*.log"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    wait_for_starts(&kepler, "sentinel", 1);

    kepler.write("src/build.log", "not a txt");
    wait_for_starts(&kepler, "sentinel", 2);

    // Positive control: a matching change does restart it, exactly once.
    kepler.write("src/main.txt", "a txt");
    wait_for_starts(&kepler, "app", 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "app"), 2);
    assert_eq!(watch_lines(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_burst_of_a_hundred_writes_restarts_the_service_once() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", r#"["src/**/*.txt"]"#, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);

    for i in 0..100 {
        fs::write(
            kepler.dir().join(format!("src/file{}.txt", i % 10)),
            i.to_string(),
        )
        .unwrap();
    }
    wait_for_starts(&kepler, "app", 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");

    // Positive control: one more change is one more restart; a late second
    // restart from the burst would come before it.
    kepler.write("src/file0.txt", "again");
    wait_for_starts(&kepler, "app", 3);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "app"), 3);
    assert_eq!(watch_lines(&kepler, "app"), 2);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn patterns_are_relative_to_the_services_working_dir() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("sub")).unwrap();
    let mut yaml = String::from("services:\n");
    // `*.txt` never crosses a `/`: the sentinel sees only top-level files.
    yaml += &watched("app", r#"["*.txt"]"#, "    working_dir: ./sub\n");
    yaml += &watched("sentinel", r#"["*.txt"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "sentinel", 1);
    kepler.wait_for_lines("sub/app.starts", "app started", |l| l.len() == 1);

    kepler.write("top.txt", "x");
    wait_for_starts(&kepler, "sentinel", 2);

    kepler.write("sub/inner.txt", "x");
    kepler.wait_for_lines("sub/app.starts", "app restarted", |l| l.len() == 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "sentinel"), 2);
    assert_eq!(watch_lines(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_service_the_user_stopped_is_not_restarted_by_file_changes() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    let mut yaml = String::from("services:\n");
    yaml += &watched("app", r#"["src/*.txt"]"#, "");
    yaml += &watched("sentinel", r#"["src/*.txt"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    wait_for_starts(&kepler, "sentinel", 1);
    kepler.kepler(&["stop", "app"]).success();

    kepler.write("src/main.txt", "x");
    wait_for_starts(&kepler, "sentinel", 2);
    let app = kepler.service("kepler.yaml", "app");
    assert_eq!(app.status(), "stopped", "{:?}", app.0);
    assert_eq!(app.pid(), None);
    assert_eq!(starts(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}
