//! The protocol server answers many requests on one connection by id, and a
//! shutdown answers in-flight requests before closing.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kepler_protocol::{Request, Response, ServerMessage};
use kepler_tests::{send, InProcessDaemon};

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
        let message = tokio::time::timeout(Duration::from_secs(10), frames.next())
            .await
            .expect("answers arrive")
            .expect("connection open")
            .expect("valid frame");
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
