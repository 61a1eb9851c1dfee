//! Dependency conditions, exit-code filters, timeouts, restart propagation
//! and the startup/deferred split, through the real binaries.

use kepler_e2e::Kepler;

/// A service that appends its name to order.txt when it starts.
fn svc(name: &str, script: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    command: [\"sh\", \"-c\", \"echo {name} >> order.txt; {script}\"]\n{extra}"
    )
}

#[test]
fn service_started_orders_a_chain() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("a", "sleep 1000", "");
    yaml += &svc("b", "sleep 1000", "    depends_on: [a]\n");
    yaml += &svc(
        "c",
        "sleep 1000",
        "    depends_on:\n      b:\n        condition: service_started\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // Spawn order is pid order: each service was spawned after the one it
    // depends on was running.
    let ps = kepler.ps("kepler.yaml");
    assert!(
        ps["a"].pid() < ps["b"].pid() && ps["b"].pid() < ps["c"].pid(),
        "{ps:?}"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn service_completed_successfully_waits_for_exit_zero_and_fails_the_dependent_otherwise() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("migrate", "sleep 0.2; exit 0", "");
    yaml += &svc(
        "app",
        "sleep 1000",
        "    depends_on:\n      migrate:\n        condition: service_completed_successfully\n",
    );
    kepler.write("ok.yaml", &yaml);
    kepler
        .kepler(&["-f", "ok.yaml", "start", "-d", "--wait"])
        .success();
    assert_eq!(
        kepler.wait_for_lines("order.txt", "two", |l| l.len() == 2),
        ["migrate", "app"]
    );
    kepler.kepler(&["-f", "ok.yaml", "stop"]).success();

    let mut yaml = String::from("services:\n");
    yaml += &svc("migrate", "exit 3", "");
    yaml += &svc(
        "app",
        "sleep 1000",
        "    depends_on:\n      migrate:\n        condition: service_completed_successfully\n",
    );
    kepler.write("bad.yaml", &yaml);
    kepler
        .kepler(&["-f", "bad.yaml", "start", "-d", "--wait"])
        .failure()
        .stderr_has("migrate");
    let app = kepler.wait_for_service("bad.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(app.reason().contains("migrate"), "{:?}", app.0);
}

#[test]
fn service_failed_honours_the_exit_code_filter() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("job", "exit 5", "");
    yaml += &svc(
        "on_five",
        "sleep 1000",
        "    depends_on:\n      job:\n        condition: service_failed\n        exit_code: [5, '7:9']\n",
    );
    yaml += &svc(
        "on_one",
        "sleep 1000",
        "    depends_on:\n      job:\n        condition: service_failed\n        exit_code: [1]\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "on_five", "running", |r| {
        r.status() == "running"
    });
    let never = kepler.wait_for_service("kepler.yaml", "on_one", "failed", |r| {
        r.status() == "failed"
    });
    assert!(never.reason().contains("job"), "{:?}", never.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn service_stopped_starts_the_dependent_once_its_dependency_is_down() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("main", "sleep 1000", "");
    yaml += &svc(
        "cleanup",
        "sleep 1000",
        "    depends_on:\n      main:\n        condition: service_stopped\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert_eq!(
        kepler.service("kepler.yaml", "cleanup").status(),
        "starting"
    );
    kepler.kepler(&["stop", "main"]).success();
    kepler.wait_for_service("kepler.yaml", "cleanup", "running", |r| {
        r.status() == "running"
    });
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_dependency_timeout_fails_the_dependent_naming_what_it_waited_for() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("slow", "sleep 1000", "");
    yaml += &svc(
        "app",
        "sleep 1000",
        "    depends_on:\n      slow:\n        condition: service_completed_successfully\n        timeout: 300ms\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has("timed out after 300ms")
        .stderr_has("slow");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn the_global_timeout_applies_when_an_edge_has_none() {
    let kepler = Kepler::started();
    let mut yaml = String::from("kepler:\n  timeout: 200ms\nservices:\n");
    yaml += &svc("slow", "sleep 1000", "");
    yaml += &svc(
        "app",
        "sleep 1000",
        "    depends_on:\n      slow:\n        condition: service_completed_successfully\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d"]).success();
    let app = kepler.wait_for_service("kepler.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(
        app.reason().contains("timed out after 200ms"),
        "{:?}",
        app.0
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn restart_true_restarts_the_dependent_after_its_dependency() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("db", "sleep 1000", "");
    yaml += &svc(
        "web",
        "sleep 1000",
        "    depends_on:\n      db:\n        restart: true\n",
    );
    yaml += &svc("batch", "sleep 1000", "    depends_on: [db]\n");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let before = kepler.ps("kepler.yaml");
    kepler.kepler(&["restart", "-d", "--wait", "db"]).success();
    let after = kepler.ps("kepler.yaml");
    assert_ne!(before["db"].pid(), after["db"].pid());
    assert_ne!(
        before["web"].pid(),
        after["web"].pid(),
        "web declared restart: true"
    );
    assert_eq!(before["batch"].pid(), after["batch"].pid(), "batch did not");
    assert!(
        after["db"].pid() < after["web"].pid(),
        "db comes back before web: {after:?}"
    );
    assert_eq!(after["web"].status(), "running");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn an_automatic_restart_propagates_too() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc(
        "db",
        "if [ ! -f crashed ]; then touch crashed; sleep 0.3; exit 1; fi; sleep 1000",
        "    restart:\n      policy: on-failure\n      delay: 10ms\n",
    );
    yaml += &svc(
        "web",
        "sleep 1000",
        "    depends_on:\n      db:\n        restart: true\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let first_web = kepler.service("kepler.yaml", "web").pid();
    let web = kepler.wait_for_service("kepler.yaml", "web", "restarted", |r| {
        r.status() == "running" && r.pid() != first_web
    });
    let db = kepler.service("kepler.yaml", "db");
    assert_eq!(db.restarts(), 1);
    assert!(db.pid() < web.pid(), "web came back after db");
    kepler.wait_for_lines("order.txt", "two starts each", |l| l.len() == 4);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn wait_returns_once_the_startup_cluster_is_ready_while_deferred_services_keep_waiting() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("api", "sleep 1000", "");
    yaml += &svc(
        "alerter",
        "sleep 1000",
        "    depends_on:\n      api:\n        condition: service_failed\n",
    );
    yaml += &svc(
        "report",
        "sleep 1000",
        "    depends_on:\n      api:\n        condition: service_completed_successfully\n        wait: false\n",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler
        .kepler(&["start", "-d", "--wait", "--timeout", "10s"])
        .success();
    let ps = kepler.ps("kepler.yaml");
    assert_eq!(ps["api"].status(), "running");
    assert_eq!(ps["alerter"].status(), "starting");
    assert_eq!(ps["report"].status(), "starting");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_services_own_wait_puts_it_in_or_out_of_the_startup_cluster() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &svc("api", "sleep 1000", "");
    // Never healthy, but deferred by its own `wait: false`.
    yaml += &svc(
        "checker",
        "sleep 1000",
        "    wait: false\n    healthcheck:\n      test: [\"false\"]\n      interval: 1s\n",
    );
    // Waits for a deferred condition, but asks to be waited for.
    yaml += &svc(
        "alerter",
        "sleep 1000",
        "    wait: true\n    depends_on:\n      api:\n        condition: service_failed\n",
    );
    kepler.write("kepler.yaml", &yaml);

    kepler
        .kepler(&[
            "start",
            "-d",
            "--wait",
            "--timeout",
            "10s",
            "api",
            "checker",
        ])
        .success()
        .stdout_has("started 1 service (api); 1 deferred (checker)");

    let run = kepler.kepler(&["start", "-d", "--wait", "--timeout", "1s"]);
    run.failure().stderr_has("not ready: `alerter`");
    assert!(!run.stderr.contains("checker"), "{run}");
    kepler.kepler(&["stop"]).success();
}
