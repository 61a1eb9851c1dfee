//! Health checks through the real binaries: command, HTTP and TCP probes,
//! failure counting, the start period, the health hooks, and the dependency
//! conditions that follow health.
//!
//! Probes that depend on the test's say-so check for `ok.flag` in the config
//! dir, or talk to a tiny server the test runs itself.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kepler_e2e::{Kepler, ServiceRow};

fn health_failures(row: &ServiceRow) -> Option<u64> {
    row.0["health_failures"].as_u64()
}

fn healthy(row: &ServiceRow) -> bool {
    row.status() == "healthy"
}

fn unhealthy(row: &ServiceRow) -> bool {
    row.status() == "unhealthy"
}

fn set_flag(kepler: &Kepler, on: bool) {
    let flag = kepler.dir().join("ok.flag");
    if on {
        fs::write(flag, "yes").unwrap();
    } else {
        fs::remove_file(flag).unwrap();
    }
}

/// A service probed for ok.flag with the given `test:` and tight timing.
fn flag_checked(name: &str, test: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      test: {test}\n      interval: 100ms\n      timeout: 2s\n      retries: 2\n{extra}"
    )
}

#[test]
fn a_command_probe_makes_a_service_healthy_unhealthy_and_healthy_again() {
    let kepler = Kepler::started();
    set_flag(&kepler, true);
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}",
            flag_checked("app", r#"["CMD", "test", "-e", "ok.flag"]"#, "")
        ),
    );
    // --wait returns once a service with a healthcheck is healthy.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let row = kepler.service("kepler.yaml", "app");
    assert!(healthy(&row), "{:?}", row.0);
    assert_eq!(health_failures(&row), Some(0), "{:?}", row.0);

    set_flag(&kepler, false);
    let row = kepler.wait_for_service("kepler.yaml", "app", "unhealthy", unhealthy);
    assert!(health_failures(&row) >= Some(2), "{:?}", row.0);
    // Failures keep counting while it stays unhealthy.
    let before = health_failures(&row).unwrap();
    kepler.wait_for_service("kepler.yaml", "app", "counting failures", |r| {
        health_failures(r) > Some(before)
    });

    set_flag(&kepler, true);
    let row = kepler.wait_for_service("kepler.yaml", "app", "healthy again", healthy);
    assert_eq!(health_failures(&row), Some(0), "{:?}", row.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn shell_forms_of_the_test_run_through_sh() {
    let kepler = Kepler::started();
    set_flag(&kepler, true);
    let mut yaml = String::from("services:\n");
    // Each form needs a shell to read `$(cat ok.flag)`.
    yaml += &flag_checked("string", r#"'[ "$(cat ok.flag)" = yes ]'"#, "");
    yaml += &flag_checked(
        "cmd_shell",
        r#"["CMD-SHELL", "[ \"$(cat ok.flag)\" = yes ]"]"#,
        "",
    );
    yaml += &flag_checked(
        "argv",
        r#"["sh", "-c", "[ \"$(cat ok.flag)\" = yes ]"]"#,
        "",
    );
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    for name in ["string", "cmd_shell", "argv"] {
        let row = kepler.service("kepler.yaml", name);
        assert!(healthy(&row), "{name}: {:?}", row.0);
    }
    fs::write(kepler.dir().join("ok.flag"), "no").unwrap();
    for name in ["string", "cmd_shell", "argv"] {
        kepler.wait_for_service("kepler.yaml", name, "unhealthy", unhealthy);
    }
    kepler.kepler(&["stop"]).success();
}

/// A server on 127.0.0.1 answering each connection with 200 or 500 as
/// `healthy` says. Dropping it closes the port.
struct TestServer {
    port: u16,
    healthy: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(true));
        let done = Arc::new(AtomicBool::new(false));
        let (answer, stop) = (healthy.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        // A TCP probe sends nothing; an HTTP probe sends its request.
                        let mut request = [0u8; 4096];
                        let _ = conn.read(&mut request);
                        let status = if answer.load(Ordering::SeqCst) {
                            "200 OK"
                        } else {
                            "500 Internal Server Error"
                        };
                        let _ = conn.write_all(
                            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .as_bytes(),
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer {
            port,
            healthy,
            done,
            thread: Some(thread),
        }
    }

    fn answer_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn an_http_probe_follows_the_response_status() {
    let kepler = Kepler::started();
    let server = TestServer::start();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  web:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      http: http://127.0.0.1:{}/health\n      interval: 100ms\n      timeout: 2s\n      retries: 2\n",
            server.port
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert!(healthy(&kepler.service("kepler.yaml", "web")));

    server.answer_healthy(false);
    let row = kepler.wait_for_service("kepler.yaml", "web", "unhealthy", unhealthy);
    assert!(row.reason().contains("500"), "{:?}", row.0);

    server.answer_healthy(true);
    kepler.wait_for_service("kepler.yaml", "web", "healthy again", healthy);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_tcp_probe_is_healthy_while_the_port_accepts_connections() {
    let kepler = Kepler::started();
    let server = TestServer::start();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  db:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      tcp: 127.0.0.1:{}\n      interval: 100ms\n      timeout: 2s\n      retries: 2\n",
            server.port
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert!(healthy(&kepler.service("kepler.yaml", "db")));

    drop(server);
    let row = kepler.wait_for_service("kepler.yaml", "db", "unhealthy", unhealthy);
    assert!(row.reason().contains("cannot connect"), "{:?}", row.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn failures_inside_the_start_period_are_not_counted() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 50ms\n      retries: 1\n      start_period: 1500ms\n",
    );
    let started = Instant::now();
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "app", "unhealthy", unhealthy);
    // Only a lower bound: a loaded machine can make it later, never sooner.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "unhealthy after {:?}, inside the start period",
        started.elapsed()
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_probe_past_its_timeout_counts_as_a_failure() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      test: [\"CMD\", \"sleep\", \"30\"]\n      interval: 100ms\n      timeout: 200ms\n      retries: 1\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "app", "unhealthy", unhealthy);
    assert!(
        row.reason().contains("timed out after 200ms"),
        "{:?}",
        row.0
    );
    assert!(health_failures(&row) >= Some(1), "{:?}", row.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn health_transitions_run_the_healthcheck_hooks() {
    let kepler = Kepler::started();
    set_flag(&kepler, true);
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}",
            flag_checked(
                "app",
                r#"["CMD", "test", "-e", "ok.flag"]"#,
                "    hooks:\n      post_healthcheck_success:\n        run: echo success >> events.txt\n      post_healthcheck_fail:\n        run: echo fail >> events.txt\n",
            )
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_lines("events.txt", "success", |l| l == ["success"]);
    set_flag(&kepler, false);
    kepler.wait_for_lines("events.txt", "fail", |l| l == ["success", "fail"]);
    set_flag(&kepler, true);
    // One hook per transition, not per probe.
    kepler.wait_for_lines("events.txt", "success again", |l| {
        l == ["success", "fail", "success"]
    });
    kepler.kepler(&["stop"]).success();
}

#[test]
fn service_healthy_holds_the_dependent_until_its_dependency_is_healthy() {
    let kepler = Kepler::started();
    let mut yaml = String::from("services:\n");
    yaml += &flag_checked("db", r#"["CMD", "test", "-e", "ok.flag"]"#, "")
        .replace("retries: 2", "retries: 1000");
    yaml += "  app:\n    command: [\"sh\", \"-c\", \"echo app > app.txt; exec sleep 1000\"]\n    depends_on:\n      db:\n        condition: service_healthy\n";
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d"]).success();
    // Probes have failed, and the dependent still waits.
    kepler.wait_for_service("kepler.yaml", "db", "failing probes", |r| {
        health_failures(r) >= Some(3)
    });
    let app = kepler.service("kepler.yaml", "app");
    assert_eq!(app.status(), "starting", "{:?}", app.0);
    assert_eq!(app.pid(), None, "{:?}", app.0);
    assert!(!kepler.dir().join("app.txt").exists());

    set_flag(&kepler, true);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(kepler.wait_for_file("app.txt").trim(), "app");
    assert!(healthy(&kepler.service("kepler.yaml", "db")));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn service_unhealthy_starts_the_dependent_once_its_dependency_turns_unhealthy() {
    let kepler = Kepler::started();
    set_flag(&kepler, true);
    let mut yaml = String::from("services:\n");
    yaml += &flag_checked("db", r#"["CMD", "test", "-e", "ok.flag"]"#, "");
    yaml += "  alarm:\n    command: [\"sh\", \"-c\", \"echo alarm > alarm.txt; exec sleep 1000\"]\n    depends_on:\n      db:\n        condition: service_unhealthy\n";
    kepler.write("kepler.yaml", &yaml);
    // The deferred dependent does not hold --wait.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert!(healthy(&kepler.service("kepler.yaml", "db")));
    let alarm = kepler.service("kepler.yaml", "alarm");
    assert_eq!(alarm.status(), "starting", "{:?}", alarm.0);

    set_flag(&kepler, false);
    kepler.wait_for_service("kepler.yaml", "db", "unhealthy", unhealthy);
    kepler.wait_for_service("kepler.yaml", "alarm", "running", |r| {
        r.status() == "running"
    });
    assert_eq!(kepler.wait_for_file("alarm.txt").trim(), "alarm");
    kepler.kepler(&["stop"]).success();
}
