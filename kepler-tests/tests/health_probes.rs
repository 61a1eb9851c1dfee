//! Health-check runners against real probes: commands spawned like the
//! service, HTTP and TCP against local listeners. Each test waits for the
//! runner's events with a deadline; intervals are 100 ms.

mod process_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kepler_daemon::config::{bake_source, HealthProbe, Healthcheck, HumanDuration};
use kepler_daemon::health::{
    self, HealthEvent, HealthHandle, HealthSpec, HealthSpecError, HealthStatus,
};
use kepler_daemon::process::{become_subreaper, wait_group_gone, OutputMode, ProcessSpec};
use kepler_daemon::user::resolve_user;
use process_support::{group_exists, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use HealthStatus::{Healthy, Starting, Unhealthy};

const INTERVAL: Duration = Duration::from_millis(100);

/// The service a probe runs "inside": a minimal PATH, `/`, the daemon's user.
fn service_process() -> ProcessSpec {
    ProcessSpec {
        argv: vec!["service-binary-not-used-by-probes".to_owned()],
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        working_dir: PathBuf::from("/"),
        user: None,
        limits: Default::default(),
        umask: 0o022,
        stdout: OutputMode::Null,
        stderr: OutputMode::Null,
    }
}

fn check(probe: HealthProbe, retries: u32) -> Healthcheck {
    Healthcheck {
        probe,
        interval: HumanDuration(INTERVAL),
        timeout: HumanDuration::from_secs(5),
        retries,
        start_period: HumanDuration::from_secs(0),
    }
}

fn shell_probe(script: &str) -> HealthProbe {
    HealthProbe::Test(vec!["sh".into(), "-c".into(), script.into()])
}

/// Starts a runner for service `svc`, generation 7.
fn start(check: &Healthcheck) -> (HealthHandle, mpsc::UnboundedReceiver<HealthEvent>) {
    start_as(check, &service_process())
}

fn start_as(
    check: &Healthcheck,
    process: &ProcessSpec,
) -> (HealthHandle, mpsc::UnboundedReceiver<HealthEvent>) {
    let spec = HealthSpec::new("svc", 7, check, process).expect("usable healthcheck");
    let (events, receiver) = mpsc::unbounded_channel();
    (health::start(spec, events), receiver)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<HealthEvent>) -> HealthEvent {
    within("a health event", events.recv())
        .await
        .expect("the runner is still running")
}

/// Asserts status, previous status and failure count of `event`.
fn assert_event(event: &HealthEvent, previous: HealthStatus, status: HealthStatus, failures: u32) {
    assert_eq!(
        (event.previous, event.status, event.consecutive_failures),
        (previous, status, failures),
        "{event:?}"
    );
}

fn marker_probe(dir: &Path) -> (PathBuf, HealthProbe) {
    let marker = dir.join("ready");
    let probe = shell_probe(&format!("test -f '{}'", marker.display()));
    (marker, probe)
}

#[tokio::test]
async fn passing_command_probe_makes_the_service_healthy() {
    let (_handle, mut events) = start(&check(shell_probe("exit 0"), 3));
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Healthy, 0);
    assert!(event.is_transition());
    assert_eq!((event.service.as_str(), event.generation), ("svc", 7));
    assert_eq!(event.reason, None);
}

#[tokio::test]
async fn failing_probe_makes_the_service_unhealthy_after_exactly_retries_failures() {
    let probe = shell_probe("echo checking; echo 'db is down' >&2; exit 1");
    let (_handle, mut events) = start(&check(probe, 3));
    for failures in 1..=2 {
        let event = next_event(&mut events).await;
        assert_event(&event, Starting, Starting, failures);
        assert!(!event.is_transition());
    }
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Unhealthy, 3);
    assert!(event.is_transition());
    // The last line of stderr tells why, as in `docker inspect`'s health log.
    assert_eq!(
        event.reason.as_deref(),
        Some("exited with code 1: db is down")
    );
    // Unhealthy keeps counting, without a new transition.
    let event = next_event(&mut events).await;
    assert_event(&event, Unhealthy, Unhealthy, 4);
}

#[tokio::test]
async fn unhealthy_service_becomes_healthy_when_its_probe_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (marker, probe) = marker_probe(dir.path());
    let (_handle, mut events) = start(&check(probe, 1));
    assert_event(&next_event(&mut events).await, Starting, Unhealthy, 1);

    std::fs::write(&marker, "").unwrap();
    // Failures that happened before the marker appeared may still arrive.
    let event = within("healthy", async {
        loop {
            let event = next_event(&mut events).await;
            if event.status == Healthy {
                return event;
            }
        }
    })
    .await;
    assert_event(&event, Unhealthy, Healthy, 0);
    assert!(event.is_transition());
}

#[tokio::test]
async fn failure_count_changes_of_a_healthy_service_are_reported_without_a_transition() {
    let dir = tempfile::tempdir().unwrap();
    let (marker, probe) = marker_probe(dir.path());
    std::fs::write(&marker, "").unwrap();
    let (_handle, mut events) = start(&check(probe, 3));
    assert_event(&next_event(&mut events).await, Starting, Healthy, 0);

    std::fs::remove_file(&marker).unwrap();
    let event = next_event(&mut events).await;
    assert_event(&event, Healthy, Healthy, 1);
    assert!(!event.is_transition());
    assert_eq!(event.reason.as_deref(), Some("exited with code 1"));

    std::fs::write(&marker, "").unwrap();
    let mut event = next_event(&mut events).await;
    if event.consecutive_failures == 2 {
        // One more probe ran before the marker was back.
        event = next_event(&mut events).await;
    }
    assert_event(&event, Healthy, Healthy, 0);
    assert_eq!(event.reason, None);
}

#[tokio::test]
async fn failures_inside_the_start_period_do_not_count() {
    let start_period = Duration::from_millis(800);
    let mut check = check(shell_probe("exit 1"), 1);
    check.start_period = HumanDuration(start_period);
    let started = Instant::now();
    let (_handle, mut events) = start(&check);
    // With retries 1, any counted failure is a transition; several probes
    // fail inside the start period without one.
    let event = next_event(&mut events).await;
    assert!(
        started.elapsed() >= start_period,
        "counted a failure after {:?}",
        started.elapsed()
    );
    assert_event(&event, Starting, Unhealthy, 1);
}

#[tokio::test]
async fn success_inside_the_start_period_makes_the_service_healthy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (marker, probe) = marker_probe(dir.path());
    std::fs::write(&marker, "").unwrap();
    let start_period = Duration::from_secs(60);
    let mut check = check(probe, 1);
    check.start_period = HumanDuration(start_period);
    let started = Instant::now();
    let (_handle, mut events) = start(&check);
    assert_event(&next_event(&mut events).await, Starting, Healthy, 0);

    // Once healthy, the grace is over: failures count at once.
    std::fs::remove_file(&marker).unwrap();
    assert_event(&next_event(&mut events).await, Healthy, Unhealthy, 1);
    assert!(started.elapsed() < start_period);
}

#[tokio::test]
async fn probe_overrunning_its_timeout_is_killed_with_its_whole_group() {
    become_subreaper().expect("subreaper");
    let mut check = check(shell_probe("sleep 100 & sleep 100"), 1);
    check.timeout = HumanDuration::from_millis(300);
    let (handle, mut events) = start(&check);
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Unhealthy, 1);
    assert_eq!(event.reason.as_deref(), Some("timed out after 300ms"));
    let pgid = handle.last_probe_pgid().expect("a probe ran");
    // The result is reported only once the group is gone.
    assert!(
        !group_exists(pgid),
        "processes of probe group {pgid} remain"
    );
}

/// Starts a runner whose probe announces itself on a FIFO and then hangs,
/// and returns once that probe is running.
async fn runner_with_hanging_probe(
    dir: &Path,
) -> (HealthHandle, mpsc::UnboundedReceiver<HealthEvent>, i32) {
    become_subreaper().expect("subreaper");
    let fifo = dir.join("probe-started");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let script = format!("echo $$ > '{}'; sleep 100 & sleep 100", fifo.display());
    let (handle, events) = start(&check(shell_probe(&script), 1));
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&fifo)
        .unwrap();
    let mut line = String::new();
    within(
        "the probe to start",
        BufReader::new(receiver).read_line(&mut line),
    )
    .await
    .unwrap();
    let pgid: i32 = line.trim().parse().unwrap();
    // The child announces itself as soon as it runs, which can be before the
    // runner's thread is scheduled again to record the group it just
    // spawned (the two are not ordered); wait for the record.
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.last_probe_pgid() != Some(pgid) {
        assert!(
            Instant::now() < deadline,
            "the runner never recorded probe group {pgid}: {:?}",
            handle.last_probe_pgid()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (handle, events, pgid)
}

#[tokio::test]
async fn stopping_the_runner_kills_the_probe_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, mut events, pgid) = runner_with_hanging_probe(dir.path()).await;
    within("stop", handle.stop()).await;
    assert!(
        !group_exists(pgid),
        "processes of probe group {pgid} remain"
    );
    assert!(events.recv().await.is_none(), "no event after a stop");
}

#[tokio::test]
async fn dropping_the_handle_kills_the_probe_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _events, pgid) = runner_with_hanging_probe(dir.path()).await;
    drop(handle);
    within("the probe group to be gone", wait_group_gone(pgid)).await;
}

/// A local HTTP server answering every request with `status`; it checks the
/// request line and Host header and answers 400 if they are wrong.
async fn http_server(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    if reader.read_line(&mut head).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let expected = format!("GET /health?deep=1 HTTP/1.1\r\nHost: {address}\r\n");
                let status = if head.starts_with(&expected) && head.contains("Connection: close") {
                    status
                } else {
                    "400 Bad Request"
                };
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
                let _ = reader.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{address}/health?deep=1")
}

#[tokio::test]
async fn http_probe_is_healthy_on_a_2xx_answer() {
    let url = http_server("200 OK").await;
    let (_handle, mut events) = start(&check(HealthProbe::Http(url), 1));
    assert_event(&next_event(&mut events).await, Starting, Healthy, 0);
}

#[tokio::test]
async fn http_probe_is_unhealthy_on_a_500_answer() {
    let url = http_server("500 Internal Server Error").await;
    let (_handle, mut events) = start(&check(HealthProbe::Http(url.clone()), 1));
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Unhealthy, 1);
    assert_eq!(
        event.reason.unwrap(),
        format!("GET {url} answered HTTP 500")
    );
}

/// An address nothing listens on: bound, then closed.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn http_probe_is_unhealthy_when_the_connection_is_refused() {
    let address = closed_port().await;
    let url = format!("http://{address}/");
    let (_handle, mut events) = start(&check(HealthProbe::Http(url), 1));
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Unhealthy, 1);
    let reason = event.reason.unwrap();
    assert!(
        reason.starts_with(&format!("cannot connect to {address}: ")) && reason.contains("refused"),
        "{reason}"
    );
}

#[tokio::test]
async fn http_probe_that_gets_no_answer_times_out() {
    // Accepts connections (the kernel does, from the backlog) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let mut check = check(HealthProbe::Http(url), 1);
    check.timeout = HumanDuration::from_millis(200);
    let (_handle, mut events) = start(&check);
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Unhealthy, 1);
    assert_eq!(event.reason.as_deref(), Some("timed out after 200ms"));
    drop(listener);
}

#[test]
fn https_probe_is_refused_with_a_hint_to_use_curl() {
    let check = check(HealthProbe::Http("https://localhost:8443/".into()), 3);
    let err = HealthSpec::new("web", 1, &check, &service_process()).expect_err("https");
    assert!(matches!(err, HealthSpecError::HttpsUnsupported { .. }));
    let message = err.to_string();
    assert!(
        message.contains("service `web`")
            && message.contains("https probes are not supported; use a CMD probe with curl"),
        "{message}"
    );
}

#[tokio::test]
async fn tcp_probe_follows_whether_a_listener_is_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_handle, mut events) = start(&check(HealthProbe::Tcp(address.clone()), 1));
    assert_event(&next_event(&mut events).await, Starting, Healthy, 0);

    drop(listener);
    let event = next_event(&mut events).await;
    assert_event(&event, Healthy, Unhealthy, 1);
    assert!(event
        .reason
        .unwrap()
        .starts_with(&format!("cannot connect to {address}: ")),);
}

#[tokio::test]
async fn slow_probe_does_not_delay_another_services_events() {
    let mut slow = check(shell_probe("sleep 100"), 1);
    slow.timeout = HumanDuration::from_secs(2);
    // Every failure changes the count, so the fast service reports each probe.
    let fast = check(shell_probe("exit 1"), 1000);

    let (events, mut receiver) = mpsc::unbounded_channel();
    let slow = HealthSpec::new("slow", 1, &slow, &service_process()).unwrap();
    let fast = HealthSpec::new("fast", 1, &fast, &service_process()).unwrap();
    let started = Instant::now();
    let _slow = health::start(slow, events.clone());
    let _fast = health::start(fast, events);

    for failures in 1..=5 {
        let event = next_event(&mut receiver).await;
        assert_eq!(
            (event.service.as_str(), event.consecutive_failures),
            ("fast", failures),
            "{event:?} after {:?}",
            started.elapsed()
        );
    }
    let event = within("the slow probe's timeout", async {
        loop {
            let event = next_event(&mut receiver).await;
            if event.service == "slow" {
                return event;
            }
        }
    })
    .await;
    assert_eq!(event.reason.as_deref(), Some("timed out after 2s"));
}

#[tokio::test]
async fn command_probe_runs_with_the_service_environment_and_working_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = service_process();
    process.env.insert("FOO".into(), "bar".into());
    process.working_dir = dir.path().to_owned();
    let script = format!(
        r#"[ "$FOO" = bar ] && [ "$(pwd)" = '{}' ]"#,
        dir.path().display()
    );
    let (_handle, mut events) = start_as(&check(shell_probe(&script), 1), &process);
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Healthy, 0);
}

#[tokio::test]
async fn command_probe_runs_as_the_service_user() {
    let Ok(user) = resolve_user("kepler-test-a", None) else {
        eprintln!("skipped: no `kepler-test-a` account on this machine");
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let script = format!(
        r#"[ "$(id -u)" = {} ] && [ "$(id -g)" = {} ]"#,
        user.uid, user.gid
    );
    let mut process = service_process();
    process.user = Some(user);
    let (_handle, mut events) = start_as(&check(shell_probe(&script), 1), &process);
    let event = next_event(&mut events).await;
    assert_event(&event, Starting, Healthy, 0);
}

#[tokio::test]
async fn docker_test_forms_from_a_config_all_probe() {
    let yaml = r#"
services:
  plain:
    command: ["sleep", "1"]
    environment: [PATH=/usr/bin:/bin]
    healthcheck: { test: "exit 0", interval: 100ms }
  cmd:
    command: ["sleep", "1"]
    environment: [PATH=/usr/bin:/bin]
    healthcheck: { test: ["CMD", "true"], interval: 100ms }
  cmd_shell:
    command: ["sleep", "1"]
    environment: [PATH=/usr/bin:/bin]
    healthcheck: { test: ["CMD-SHELL", "test 1 -eq 1"], interval: 100ms }
"#;
    let dir = tempfile::tempdir().unwrap();
    let baked = bake_source(
        &dir.path().join("kepler.yaml"),
        yaml.into(),
        &BTreeMap::new(),
    )
    .expect("config bakes")
    .config;
    let (events, mut receiver) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for (name, service) in &baked.services {
        let process = ProcessSpec {
            argv: service.command.clone(),
            env: service.environment.clone(),
            working_dir: service.working_dir.clone(),
            ..service_process()
        };
        let check = service.healthcheck.as_ref().expect("healthcheck");
        let spec = HealthSpec::new(name.clone(), 1, check, &process).unwrap();
        handles.push(health::start(spec, events.clone()));
    }
    let mut healthy = Vec::new();
    while healthy.len() < 3 {
        let event = next_event(&mut receiver).await;
        assert_eq!(event.status, Healthy, "{event:?}");
        healthy.push(event.service);
    }
    healthy.sort();
    assert_eq!(healthy, ["cmd", "cmd_shell", "plain"]);
}

#[tokio::test]
async fn probe_that_cannot_start_fails_with_the_spawn_error() {
    let check = check(HealthProbe::Test(vec!["/nonexistent/check".into()]), 1);
    let (_handle, mut events) = start(&check);
    let reason = next_event(&mut events).await.reason.unwrap();
    assert!(
        reason.starts_with("the health check did not start: cannot start `/nonexistent/check`"),
        "{reason}"
    );
}

#[tokio::test]
async fn probes_go_on_while_the_callers_runtime_is_busy() {
    // Runners live on the daemon's probe thread: this test's single-threaded
    // runtime is kept busy (never yields) while a std listener counts probes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let (handle, _events) = start(&check(HealthProbe::Tcp(format!("127.0.0.1:{port}")), 3));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "probes stalled while the caller's runtime was busy"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop().await;
}
