//! Start, inspect and stop a small stack through the in-process daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use kepler_protocol::{
    ConfigRef, Event, Request, Response, ServerMessage, ServiceStatus, StartMode,
};
use kepler_tests::{next_message, send, ClientFrames, InProcessDaemon};

async fn answer(frames: &mut ClientFrames, id: u64) -> Response {
    loop {
        let message = next_message(frames, Duration::from_secs(20)).await;
        if let ServerMessage::Response { id: got, response } = message {
            if got == id {
                return response;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_chain_starts_in_order_and_stops_completely() {
    let daemon = InProcessDaemon::start().await;
    let config_path = daemon.dir.path().join("kepler.yaml");
    std::fs::write(
        &config_path,
        "services:\n  db:\n    command: [sleep, '1000']\n  web:\n    command: [sleep, '1000']\n    depends_on: [db]\n",
    )
    .unwrap();
    let config = ConfigRef { path: config_path };
    let mut frames = daemon.connect().await;
    send(
        &mut frames,
        1,
        Request::Start {
            config: config.clone(),
            sys_env: BTreeMap::new(),
            services: vec![],
            mode: StartMode::Wait {
                timeout_ms: Some(10_000),
            },
        },
    )
    .await;
    assert_eq!(
        answer(&mut frames, 1).await,
        Response::Started {
            ready: vec!["db".into(), "web".into()],
            deferred: vec![],
        }
    );

    send(
        &mut frames,
        2,
        Request::Ps {
            config: Some(config.clone()),
        },
    )
    .await;
    // The services come as parts before the answer, which names the config.
    let mut services = Vec::new();
    let configs = loop {
        let message = next_message(&mut frames, Duration::from_secs(20)).await;
        match message {
            ServerMessage::Event {
                id: 2,
                event: Event::PsPart(part),
            } => services.extend(part.services),
            ServerMessage::Response { id: 2, response } => {
                let Response::Ps(configs) = response else {
                    panic!("expected ps, got {response:?}")
                };
                break configs;
            }
            _ => {}
        }
    };
    assert_eq!(configs.len(), 1);
    assert_eq!(services.len(), 2, "{services:?}");
    let pids: Vec<u32> = services
        .iter()
        .map(|s| {
            assert_eq!(s.status, ServiceStatus::Running, "{s:?}");
            s.pid.unwrap()
        })
        .collect();

    send(
        &mut frames,
        3,
        Request::Stop {
            config: config.clone(),
            services: vec![],
            signal: None,
            clean: false,
        },
    )
    .await;
    assert_eq!(answer(&mut frames, 3).await, Response::Done);
    for pid in pids {
        assert_eq!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(-(pid as i32)), None),
            Err(nix::errno::Errno::ESRCH),
            "process group {pid} survived the stop"
        );
    }
    daemon.shutdown().await;
}
