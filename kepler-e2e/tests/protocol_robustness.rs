//! Bad bytes on one connection never hurt the daemon or other connections.

use kepler_e2e::wire::RawConnection;
use kepler_e2e::Kepler;
use kepler_protocol::{Hello, HelloReply, Request, Response, MAX_FRAME_LEN};

fn welcomed(kepler: &Kepler) -> RawConnection {
    let mut connection = RawConnection::connect(&kepler.socket_path()).unwrap();
    assert!(matches!(
        connection.hello().unwrap(),
        HelloReply::Welcome { .. }
    ));
    connection
}

#[test]
fn garbage_bytes_close_only_that_connection() {
    let kepler = Kepler::started();
    let mut bystander = welcomed(&kepler);

    let mut vandal = welcomed(&kepler);
    vandal.send_bytes(&8u32.to_be_bytes()).unwrap();
    vandal
        .send_bytes(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(vandal.is_closed_by_daemon());

    assert_eq!(bystander.request(1, Request::Ping).unwrap(), Response::Pong);
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn garbage_instead_of_a_hello_closes_only_that_connection() {
    let kepler = Kepler::started();
    let mut vandal = RawConnection::connect(&kepler.socket_path()).unwrap();
    vandal.send_bytes(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(vandal.is_closed_by_daemon());
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    let kepler = Kepler::started();
    let mut bystander = welcomed(&kepler);

    let mut vandal = welcomed(&kepler);
    vandal
        .send_bytes(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes())
        .unwrap();
    // The daemon may close as soon as it has read the length, before this
    // body arrives; the write then fails with EPIPE, which is the point.
    let _ = vandal.send_bytes(&[0u8; 1024]);
    assert!(vandal.is_closed_by_daemon());

    assert_eq!(bystander.request(7, Request::Ping).unwrap(), Response::Pong);
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn a_client_of_another_protocol_version_is_told_both_versions() {
    let kepler = Kepler::started();
    let mut old = RawConnection::connect(&kepler.socket_path()).unwrap();
    old.send(Hello {
        protocol: kepler_protocol::PROTOCOL_VERSION + 41,
        version: "0.0.1-old".into(),
    })
    .unwrap();
    match old.receive::<HelloReply>().unwrap() {
        Some(HelloReply::Refused { reason }) => {
            assert!(reason.contains("version mismatch"), "{reason}");
            assert!(reason.contains("0.0.1-old"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn requests_on_one_connection_are_answered_by_id() {
    let kepler = Kepler::started();
    let mut connection = welcomed(&kepler);
    for id in [5, 9, 2] {
        assert_eq!(
            connection.request(id, Request::Ping).unwrap(),
            Response::Pong
        );
    }
    match connection.request(3, Request::DaemonStatus).unwrap() {
        Response::DaemonStatus(status) => {
            assert_eq!(status.pid as i32, kepler.daemon_pid().unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}
