//! The protocol server answers many requests on one connection by id, a
//! shutdown answers in-flight requests before closing, and a connection with
//! nothing in flight is closed after the idle timeout.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kepler_daemon::server::ConnectionLimits;
use kepler_protocol::{ConfigRef, LogRange, Request, Response, ServerMessage, StartMode};
use kepler_tests::{next_message, send, InProcessDaemon};

#[tokio::test]
async fn many_requests_in_flight_on_one_connection_are_each_answered_once() {
    let daemon = InProcessDaemon::start().await;
    let mut frames = daemon.connect().await;
    for id in 1..=200u64 {
        let request = if id % 2 == 0 {
            Request::Ping
        } else {
            Request::DaemonStatus
        };
        send(&mut frames, id, request).await;
    }
    let mut answered = HashSet::new();
    while answered.len() < 200 {
        let message = next_message(&mut frames, Duration::from_secs(10)).await;
        match message {
            ServerMessage::Response { id, response } => {
                match (id % 2, &response) {
                    (0, Response::Pong) | (1, Response::DaemonStatus(_)) => {}
                    _ => panic!("request {id} got the wrong answer: {response:?}"),
                }
                assert!(answered.insert(id), "request {id} answered twice");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn shutdown_request_is_acknowledged_before_the_connection_closes() {
    let daemon = InProcessDaemon::start().await;
    let mut frames = daemon.connect().await;
    send(&mut frames, 1, Request::Shutdown).await;
    match frames.next().await {
        Some(Ok(ServerMessage::Response {
            id: 1,
            response: Response::ShuttingDown { pid },
        })) => assert_eq!(pid, std::process::id()),
        other => panic!("expected the acknowledgement, got {other:?}"),
    }
    // Then the daemon closes the connection and removes its socket.
    assert!(frames.next().await.is_none());
    let socket = daemon.socket_path();
    daemon.shutdown().await;
    assert!(!socket.exists());
}

fn short_idle() -> ConnectionLimits {
    ConnectionLimits {
        idle_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    }
}

#[tokio::test]
async fn a_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout() {
    let daemon = InProcessDaemon::start_with_limits(short_idle()).await;
    let mut frames = daemon.connect().await;
    // A request resets the clock; once answered, the clock runs again.
    send(&mut frames, 1, Request::Ping).await;
    assert!(matches!(
        frames.next().await,
        Some(Ok(ServerMessage::Response {
            id: 1,
            response: Response::Pong
        }))
    ));
    let closed = tokio::time::timeout(Duration::from_secs(10), frames.next())
        .await
        .expect("the idle connection is closed");
    assert!(closed.is_none(), "{closed:?}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_stream_open_is_not_idle() {
    let daemon = InProcessDaemon::start_with_limits(short_idle()).await;
    let config = daemon.dir.path().join("kepler.yaml");
    std::fs::write(
        &config,
        "services:\n  app:\n    command: [sh, -c, 'echo up; exec sleep 1000']\n",
    )
    .unwrap();
    let config = ConfigRef { path: config };
    let mut frames = daemon.connect().await;
    let start = Request::Start {
        config: config.clone(),
        sys_env: Default::default(),
        services: vec![],
        mode: StartMode::Wait { timeout_ms: None },
    };
    send(&mut frames, 1, start).await;
    // The wait's progress events come first, then its answer.
    let started = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match frames.next().await {
                Some(Ok(ServerMessage::Event { id: 1, .. })) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        matches!(
            started,
            Ok(Some(Ok(ServerMessage::Response {
                id: 1,
                response: Response::Started { .. }
            })))
        ),
        "{started:?}"
    );
    let follow = Request::Logs {
        config: config.clone(),
        services: vec![],
        range: LogRange::All,
        include_hooks: true,
        follow: true,
        filter: Default::default(),
    };
    send(&mut frames, 2, follow).await;
    let first = tokio::time::timeout(Duration::from_secs(10), frames.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(ServerMessage::Event { id: 2, .. })))),
        "{first:?}"
    );
    // Well past the idle timeout, the connection is still served.
    tokio::time::sleep(Duration::from_millis(900)).await; // three idle timeouts
    send(&mut frames, 3, Request::Ping).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match frames.next().await {
                Some(Ok(ServerMessage::Response { id: 3, response })) => return Some(response),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("an answer");
    assert_eq!(answer, Some(Response::Pong));
    daemon.shutdown().await;
}
