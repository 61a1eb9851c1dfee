//! The real `kepler` binary against a scripted daemon: commands that only
//! look at a config send no environment and say when it is not loaded;
//! `--raw` keeps a service's bytes; an environment past the daemon's bounds
//! is refused before anything is sent.

// Shared with attached.rs, which uses the parts this file does not.
#[allow(dead_code)]
mod support;

use std::process::Output;

use kepler_protocol::{LogBatch, LogLine, Request, Response};
use support::{within, FakeDaemon};
use tokio::process::Child;

async fn finish(child: Child) -> Output {
    within(child.wait_with_output()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn stop_of_a_config_that_is_not_loaded_says_there_is_nothing_to_stop() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["stop"]);
    let mut conn = daemon.accept().await;
    let stop = conn.recv().await;
    let Request::Stop { config, .. } = stop.request else {
        panic!("expected a stop, got {:?}", stop.request)
    };
    conn.respond(stop.id, Response::NotLoaded { path: config.path })
        .await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        text(&output.stdout),
        format!(
            "nothing to stop: {} is not loaded (never started, or pruned); `kepler start` loads \
             and starts it\n",
            daemon.config_path().display()
        )
    );
}

#[tokio::test]
async fn ps_and_logs_of_a_config_that_is_not_loaded_show_nothing_and_say_why() {
    let daemon = FakeDaemon::new();
    let child = daemon.kepler(&["ps"]);
    let mut conn = daemon.accept().await;
    let ps = conn.recv().await;
    conn.respond(ps.id, Response::Ps(Vec::new())).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(text(&output.stdout).contains("is not loaded"), "{output:?}");

    let child = daemon.kepler(&["logs"]);
    let mut conn = daemon.accept().await;
    let logs = conn.recv().await;
    let path = daemon.config_path();
    conn.respond(logs.id, Response::NotLoaded { path }).await;
    let output = finish(child).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(text(&output.stdout), "");
    assert!(text(&output.stderr).contains("is not loaded"), "{output:?}");
}

#[tokio::test]
async fn raw_logs_are_the_bytes_the_service_wrote() {
    let daemon = FakeDaemon::new();
    let page = |bytes: &[u8]| {
        let line = LogLine {
            service: "web".into(),
            hook: None,
            stderr: false,
            show_time: false,
            replica: None,
            timestamp_us: 1,
            bytes: bytes.to_vec(),
        };
        Response::LogPage {
            lines: LogBatch::from_iter([line]),
            cursor: None,
        }
    };
    let written = b"\x1b[31mred\xff\r";
    for (args, expected) in [
        // The service's bytes only: no prefix (#18 item 4).
        (&["logs", "--raw"][..], &b"\x1b[31mred\xff\r\n"[..]),
        // A pipe gets the text lossily, escapes and all, as before.
        (&["logs"], "web | \x1b[31mred\u{fffd}\n".as_bytes()),
    ] {
        let child = daemon.kepler(args);
        let mut conn = daemon.accept().await;
        let logs = conn.recv().await;
        conn.respond(logs.id, page(written)).await;
        let output = finish(child).await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert_eq!(output.stdout, expected, "{args:?}: {output:?}");
    }
}

#[tokio::test]
async fn an_environment_past_the_daemons_bounds_is_refused_before_connecting() {
    let daemon = FakeDaemon::new();
    let many: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("KEPLER_TEST_VAR_{i}"), "1".into()))
        .collect();
    let output = finish(daemon.kepler_with_env(&["start", "-d"], &many)).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        text(&output.stderr).contains("more than the 4096 kepler accepts"),
        "{output:?}"
    );
    assert!(!daemon.has_waiting_connection(), "the CLI connected");
}
