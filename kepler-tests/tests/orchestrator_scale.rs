//! `kepler scale` against the in-process daemon: scaling back up while
//! retired instances are still stopping takes them back instead of adding
//! twins, and every answer comes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kepler_protocol::{
    ConfigRef, Event, Request, Response, ScaledService, ServerMessage, ServiceInfo, ServiceStatus,
    StartMode,
};
use kepler_tests::{next_message, send, ClientFrames, InProcessDaemon};

/// The answer to request `id`, keeping answers to others for later.
async fn answer(
    frames: &mut ClientFrames,
    early: &mut BTreeMap<u64, Response>,
    id: u64,
) -> Response {
    if let Some(response) = early.remove(&id) {
        return response;
    }
    loop {
        let message = next_message(frames, Duration::from_secs(20)).await;
        if let ServerMessage::Response { id: got, response } = message {
            if got == id {
                return response;
            }
            early.insert(got, response);
        }
    }
}

async fn ps(
    frames: &mut ClientFrames,
    early: &mut BTreeMap<u64, Response>,
    config: &ConfigRef,
    id: u64,
) -> Vec<ServiceInfo> {
    send(
        frames,
        id,
        Request::Ps {
            config: Some(config.clone()),
        },
    )
    .await;
    // The services come as parts before the answer.
    let mut services = Vec::new();
    loop {
        let message = next_message(frames, Duration::from_secs(20)).await;
        match message {
            ServerMessage::Event {
                id: got,
                event: Event::PsPart(part),
            } if got == id => services.extend(part.services),
            ServerMessage::Response { id: got, response } if got == id => {
                let Response::Ps(mut configs) = response else {
                    panic!("expected ps, got {response:?}");
                };
                services.append(&mut configs.remove(0).services);
                return services;
            }
            ServerMessage::Response { id: got, response } => {
                early.insert(got, response);
            }
            ServerMessage::Event { .. } => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_while_retired_instances_stop_takes_them_back() {
    let daemon = InProcessDaemon::start().await;
    let config_path = daemon.dir.path().join("kepler.yaml");
    // Instances ignore SIGTERM, so a retired one stays `stopping` for its
    // grace period: long enough to scale up again meanwhile.
    std::fs::write(
        &config_path,
        "services:\n  web:\n    replicas: 3\n    command: [sh, -c, \"trap '' TERM; exec sleep 1000\"]\n    stop_grace_period: 2s\n",
    )
    .unwrap();
    let config = ConfigRef { path: config_path };
    let mut frames = daemon.connect().await;
    let mut early = BTreeMap::new();
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
    assert!(matches!(
        answer(&mut frames, &mut early, 1).await,
        Response::Started { .. }
    ));
    let before: Vec<u32> = ps(&mut frames, &mut early, &config, 2)
        .await
        .iter()
        .map(|s| s.pid.unwrap())
        .collect();

    send(
        &mut frames,
        3,
        Request::Scale {
            config: config.clone(),
            services: vec![("web".into(), 1)],
            timeout_ms: None,
        },
    )
    .await;
    // Wait (with a deadline) until web.2 and web.3 are on their way down.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 10;
    loop {
        id += 1;
        let services = ps(&mut frames, &mut early, &config, id).await;
        let stopping = services
            .iter()
            .filter(|s| s.status == ServiceStatus::Stopping)
            .count();
        if stopping == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never stopping: {services:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send(
        &mut frames,
        4,
        Request::Scale {
            config: config.clone(),
            services: vec![("web".into(), 3)],
            timeout_ms: Some(10_000),
        },
    )
    .await;
    assert_eq!(
        answer(&mut frames, &mut early, 3).await,
        Response::Scaled(vec![ScaledService {
            service: "web".into(),
            from: 3,
            to: 1
        }])
    );
    assert_eq!(
        answer(&mut frames, &mut early, 4).await,
        Response::Scaled(vec![ScaledService {
            service: "web".into(),
            from: 1,
            to: 3
        }])
    );
    let after = ps(&mut frames, &mut early, &config, 5).await;
    let names: Vec<&str> = after.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2", "web.3"], "{after:?}");
    assert!(after.iter().all(|s| s.status == ServiceStatus::Running));
    assert_eq!(after[0].pid, Some(before[0]), "web.1 was left alone");
    assert_ne!(
        after[1].pid,
        Some(before[1]),
        "web.2 came back as a new process"
    );
    assert_ne!(
        after[2].pid,
        Some(before[2]),
        "web.3 came back as a new process"
    );

    send(
        &mut frames,
        6,
        Request::Stop {
            config: config.clone(),
            services: vec![],
            signal: Some(9),
            clean: false,
        },
    )
    .await;
    assert_eq!(answer(&mut frames, &mut early, 6).await, Response::Done);
    daemon.shutdown().await;
}
