//! What health checks cost the daemon: `health_cost [SERVICES] [SECONDS]
//! [--host NAME]` starts SERVICES (default 100) runners with 1 s `http:`
//! probes against a tiny HTTP server in this process, runs SECONDS (default
//! 20), and prints the CPU time used.
//!
//! The runners live where the daemon puts them (`health::start` runs them
//! on the probe thread); this process's multi-threaded runtime only
//! receives their events. The server runs on its own thread with its own
//! runtime, which measures its
//! own CPU time (`RUSAGE_THREAD`) so it can be subtracted from the
//! process's. The remainder is the runners' cost (tokio's idle workers and
//! timer included). `--host localhost` probes by name, which adds a resolver
//! lookup per probe; the default is `127.0.0.1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use kepler_daemon::config::{HealthProbe, Healthcheck, HumanDuration};
use kepler_daemon::health::{self, HealthSpec, HealthStatus};
use kepler_daemon::process::{OutputMode, ProcessSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut numbers = args.iter().filter_map(|arg| arg.parse::<u64>().ok());
    let services = numbers.next().unwrap_or(100);
    let seconds = numbers.next().unwrap_or(20);
    let host = args
        .iter()
        .position(|arg| arg == "--host")
        .and_then(|at| args.get(at + 1))
        .map_or("127.0.0.1", String::as_str)
        .to_owned();

    let answered = Arc::new(AtomicU64::new(0));
    let (port, server_cpu, stop_server) = start_server(Arc::clone(&answered));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (healthy, other_events, wall, process_cpu) = runtime.block_on(async {
        let (events, mut receiver) = mpsc::unbounded_channel();
        let check = Healthcheck {
            probe: HealthProbe::Http(format!("http://{host}:{port}/health")),
            interval: HumanDuration::from_secs(1),
            timeout: HumanDuration::from_secs(5),
            retries: 3,
            start_period: HumanDuration::from_secs(0),
        };
        let process = ProcessSpec {
            argv: vec!["unused".into()],
            env: BTreeMap::new(),
            working_dir: PathBuf::from("/"),
            user: None,
            limits: Default::default(),
            umask: 0o022,
            stdout: OutputMode::Null,
            stderr: OutputMode::Null,
        };
        let cpu_before = process_cpu_time();
        let started = Instant::now();
        let handles: Vec<_> = (0..services)
            .map(|n| {
                let spec = HealthSpec::new(format!("svc{n}"), 1, &check, &process).expect("spec");
                health::start(spec, events.clone())
            })
            .collect();
        drop(events);
        let (mut healthy, mut other) = (0u64, 0u64);
        let deadline = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                Some(event) = receiver.recv() => {
                    if event.status == HealthStatus::Healthy && event.is_transition() {
                        healthy += 1;
                    } else {
                        other += 1;
                        eprintln!("unexpected event: {event:?}");
                    }
                }
            }
        }
        let wall = started.elapsed();
        let cpu = process_cpu_time() - cpu_before;
        drop(handles);
        (healthy, other, wall, cpu)
    });
    let _ = stop_server.send(());
    let server_cpu = server_cpu.recv().expect("server CPU time");

    let probes = answered.load(Ordering::Relaxed);
    let runners_cpu = process_cpu.saturating_sub(server_cpu);
    let share = |cpu: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    println!("{services} services, http probes every 1s to {host}:{port}, {wall:.1?}");
    println!(
        "probes answered: {probes}; healthy transitions: {healthy}; other events: {other_events}"
    );
    println!(
        "process CPU: {process_cpu:.3?} ({:.2}% of one core)",
        share(process_cpu)
    );
    println!(
        "server CPU:  {server_cpu:.3?} ({:.2}% of one core)",
        share(server_cpu)
    );
    println!(
        "runners CPU: {runners_cpu:.3?} ({:.2}% of one core, {:.1} us per probe)",
        share(runners_cpu),
        runners_cpu.as_secs_f64() * 1e6 / probes.max(1) as f64
    );
}

/// Starts the HTTP server on its own thread; returns its port, a channel
/// that gets the thread's CPU time once stopped, and the stop trigger.
fn start_server(
    answered: Arc<AtomicU64>,
) -> (u16, std_mpsc::Receiver<Duration>, oneshot::Sender<()>) {
    let (port_tx, port_rx) = std_mpsc::channel();
    let (cpu_tx, cpu_rx) = std_mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            port_tx
                .send(listener.local_addr().expect("address").port())
                .expect("send port");
            let serve = async {
                loop {
                    let Ok((mut stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let answered = Arc::clone(&answered);
                    tokio::spawn(async move {
                        // The probe's request fits in one read.
                        let mut request = [0u8; 1024];
                        if stream.read(&mut request).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                        answered.fetch_add(1, Ordering::Relaxed);
                    });
                }
            };
            tokio::select! {
                () = serve => {}
                _ = stop_rx => {}
            }
        });
        let _ = cpu_tx.send(thread_cpu_time());
    });
    (port_rx.recv().expect("server port"), cpu_rx, stop_tx)
}

fn process_cpu_time() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

fn thread_cpu_time() -> Duration {
    rusage_cpu(libc::RUSAGE_THREAD)
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid out-pointer.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
