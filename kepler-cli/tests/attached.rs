//! The real `kepler` binary against a scripted daemon: what each verb sends,
//! how it shows the answer, and the Ctrl+C protocol of an attached start
//! (a stop on the same connection, then exit 130 on the second Ctrl+C).

// Shared with looking.rs, which uses the parts this file does not.
#[allow(dead_code)]
mod support;

use std::process::Output;

use kepler_protocol::{
    ConfigServices, ErrorKind, Event, LogLine, Request, Response, ServiceInfo, ServiceStatus,
    StartMode,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{kepler_in, within, FakeDaemon};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

fn log(service: &str, text: &str) -> Event {
    Event::Log(LogLine {
        service: service.into(),
        hook: None,
        stderr: false,
        show_time: false,
        replica: None,
        timestamp_us: 0,
        bytes: text.as_bytes().to_vec(),
    })
}

fn interrupt(child: &Child) {
    let pid = Pid::from_raw(child.id().expect("still running") as i32);
    kill(pid, Signal::SIGINT).unwrap();
}

async fn finish(child: Child) -> Output {
    within(child.wait_with_output()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn attached_start_prints_logs_and_states_and_exits_0_when_done() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["start", "web"]);
    let mut conn = daemon.accept().await;
    let start = conn.recv().await;
    match &start.request {
        Request::Start {
            config,
            sys_env,
            services,
            mode,
        } => {
            assert_eq!(config.path, daemon.config_path());
            assert!(sys_env.contains_key("PATH"));
            assert_eq!(services, &["web"]);
            assert_eq!(*mode, StartMode::Attached);
        }
        other => panic!("expected a start, got {other:?}"),
    }
    conn.event(start.id, log("web", "hello\n")).await;
    let exited = Event::ServiceState {
        service: "web".into(),
        status: ServiceStatus::Exited(0),
        reason: None,
    };
    conn.event(start.id, exited).await;
    conn.respond(start.id, Response::Done).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        text(&output.stdout),
        "web | hello\nkepler | web exited (0)\n"
    );
}

#[tokio::test]
async fn first_ctrl_c_stops_the_same_services_on_the_same_connection() {
    let daemon = FakeDaemon::new();
    let mut child = daemon.kepler(&["start", "web", "db"]);
    let mut conn = daemon.accept().await;
    let start = conn.recv().await;
    conn.event(start.id, log("web", "up")).await;
    // Once the line is printed the CLI is listening for Ctrl+C.
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        within(stdout.next_line()).await.unwrap().unwrap(),
        "web | up"
    );

    interrupt(&child);
    let stop = conn.recv().await;
    assert_ne!(stop.id, start.id);
    match &stop.request {
        Request::Stop {
            config,
            services,
            signal,
            clean,
        } => {
            assert_eq!(config.path, daemon.config_path());
            assert_eq!(services, &["web", "db"]);
            assert_eq!((*signal, *clean), (None, false));
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    // The start's stream goes on while the services stop.
    conn.event(start.id, log("web", "bye")).await;
    conn.respond(stop.id, Response::Done).await;
    conn.respond(start.id, Response::Done).await;
    assert_eq!(
        within(stdout.next_line()).await.unwrap().unwrap(),
        "web | bye"
    );
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        text(&output.stderr).contains("stopping services... (press Ctrl+C again"),
        "{output:?}"
    );
}

#[tokio::test]
async fn second_ctrl_c_exits_130_without_waiting() {
    let daemon = FakeDaemon::new();
    let mut child = daemon.kepler(&["restart"]);
    let mut conn = daemon.accept().await;
    let restart = conn.recv().await;
    assert!(matches!(
        restart.request,
        Request::Restart {
            mode: StartMode::Attached,
            ..
        }
    ));
    conn.event(restart.id, log("web", "up")).await;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    within(stdout.next_line()).await.unwrap().unwrap();
    interrupt(&child);
    let stop = conn.recv().await;
    assert!(matches!(stop.request, Request::Stop { .. }));
    interrupt(&child);
    let status = within(child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn detached_wait_sends_the_timeout_and_exits_1_with_the_daemon_error() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["start", "-d", "--wait", "--timeout", "1m30s"]);
    let mut conn = daemon.accept().await;
    let start = conn.recv().await;
    assert!(matches!(
        start.request,
        Request::Start {
            mode: StartMode::Wait {
                timeout_ms: Some(90_000)
            },
            ..
        }
    ));
    let error = Response::Error {
        kind: ErrorKind::Failed,
        message: "web failed: exited (1)".into(),
    };
    conn.respond(start.id, error).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(text(&output.stderr), "error: web failed: exited (1)\n");
}

#[tokio::test]
async fn detached_start_confirms_and_exits_0() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["start", "-d"]);
    let mut conn = daemon.accept().await;
    let start = conn.recv().await;
    assert!(matches!(
        start.request,
        Request::Start {
            mode: StartMode::Detached,
            ..
        }
    ));
    conn.respond(start.id, Response::Done).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        text(&output.stdout),
        "starting all services in the background; `kepler ps` shows their state\n"
    );
}

#[tokio::test]
async fn stop_sends_the_parsed_signal() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["stop", "-s", "kill", "web"]);
    let mut conn = daemon.accept().await;
    let stop = conn.recv().await;
    assert!(matches!(
        &stop.request,
        Request::Stop { signal: Some(9), clean: false, services, .. } if services == &["web"]
    ));
    conn.respond(stop.id, Response::Done).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(text(&output.stdout), "stopped web\n");
}

#[tokio::test]
async fn ps_all_asks_for_every_config_and_prints_a_table() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["ps", "--all"]);
    let mut conn = daemon.accept().await;
    let ps = conn.recv().await;
    assert_eq!(ps.request, Request::Ps { config: None });
    let services = vec![ConfigServices {
        path: "/srv/app/kepler.yaml".into(),
        services: vec![ServiceInfo {
            name: "web".into(),
            status: ServiceStatus::Running,
            pid: Some(77),
            uptime_secs: Some(5),
            restarts: 0,
            health_failures: None,
            reason: None,
            cpu_percent: Some(1.5),
            memory_bytes: Some(3 << 20),
            cpu_seconds: Some(0.25),
            service: "web".into(),
            replica: None,
        }],
    }];
    conn.respond(ps.id, Response::Ps(services)).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        text(&output.stdout),
        "CONFIG                NAME  STATUS   PID  UPTIME  CPU   MEM   HEALTH  RESTARTS\n\
         /srv/app/kepler.yaml  web   running  77   5s      1.5%  3.0M          0\n"
    );
}

#[tokio::test]
async fn a_directory_without_a_config_exits_1_saying_what_to_do() {
    let daemon = FakeDaemon::new();
    let empty = tempfile::tempdir().unwrap();
    let output = finish(kepler_in(empty.path(), daemon.state_dir.path(), &["start"])).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: no kepler.yaml or kepler.yml in {}; create one or pass -f FILE\n",
            empty.path().canonicalize().unwrap().display()
        )
    );
}

#[tokio::test]
async fn a_bad_signal_exits_1_naming_it() {
    let daemon = FakeDaemon::new();
    let output = finish(daemon.kepler(&["stop", "-s", "SIGNOPE"])).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        text(&output.stderr).contains("'SIGNOPE' is not a signal"),
        "{output:?}"
    );
}
