//! `kepler daemon upgrade`: the daemon hands over to a second build of
//! itself (a copy of the binary with its own build stamp, so `daemon
//! status` tells the two apart) without restarting a service or losing a
//! log line.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kepler_e2e::{niceness, wait_until, Kepler};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(30);
/// The build stamp of the second binary.
const NEXT: &str = "e2e-next";
const STAMP: &[u8] = b"KEPLER-BUILD-STAMP:";

/// A copy of the daemon binary whose build stamp says [`NEXT`].
fn next_binary(kepler: &Kepler) -> PathBuf {
    let mut bytes = fs::read(kepler.bin_dir().join("kepler-daemon")).unwrap();
    let at = bytes
        .windows(STAMP.len())
        .position(|w| w == STAMP)
        .expect("the daemon binary has a build stamp")
        + STAMP.len();
    bytes[at..at + NEXT.len()].copy_from_slice(NEXT.as_bytes());
    let dir = kepler.dir().join("next");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kepler-daemon");
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `daemon status`'s pid and version.
fn status(kepler: &Kepler) -> (i32, String) {
    let run = kepler.kepler(&["daemon", "status"]);
    run.success();
    let field = |key: &str| {
        run.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{run}"))
            .trim()
            .to_string()
    };
    (field("pid:").parse().unwrap(), field("version:"))
}

fn upgrade(kepler: &Kepler, binary: &Path) {
    let run = kepler.kepler(&["daemon", "upgrade", "--binary", binary.to_str().unwrap()]);
    run.success().stdout_has("upgraded");
}

/// A service printing `<name> line <n> <padding>` about every millisecond.
fn writer(name: &str) -> String {
    format!(
        "  {name}:\n    command: [perl, -e, '$|=1; while (1) {{ print \"{name} line \", ++$i, \" \", \"x\" x 40, \"\\n\"; select(undef,undef,undef,0.001) }}']\n    logs:\n      retention:\n        on_stop: retain\n"
    )
}

/// The payloads of a service's stored stdout lines, read from its file.
fn stored_lines(kepler: &Kepler, service: &str) -> Vec<String> {
    let configs = kepler.state_dir().join("configs");
    let dir = fs::read_dir(&configs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = fs::File::open(dir.join("logs").join(format!("{service}.stdout.log"))).unwrap();
    BufReader::new(file)
        .lines()
        .map(|l| l.unwrap())
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (_ts, tag, payload) = (parts.next()?, parts.next()?, parts.next()?);
            (tag == "-").then(|| payload.to_string())
        })
        .collect()
}

/// Every line is whole and numbered 1, 2, 3... with no gap or repeat.
fn assert_contiguous(service: &str, lines: &[String]) -> u64 {
    let padding = "x".repeat(40);
    for (i, line) in lines.iter().enumerate() {
        let expected = format!("{service} line {} {padding}", i + 1);
        assert_eq!(line, &expected, "{service}: line {} is wrong", i + 1);
    }
    lines.len() as u64
}

fn last_number(kepler: &Kepler, service: &str) -> u64 {
    stored_lines(kepler, service).len() as u64
}

#[test]
fn an_upgrade_keeps_pids_counts_and_every_log_line_of_twenty_busy_services() {
    let mut kepler = Kepler::started();
    let names: Vec<String> = (1..=20).map(|i| format!("w{i}")).collect();
    let mut config = String::from("services:\n");
    for name in &names {
        config.push_str(&writer(name));
    }
    kepler.write("kepler.yaml", &config);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    for name in &names {
        wait_until("every service logs", DEADLINE, || {
            last_number(&kepler, name) > 50
        });
    }
    let before = kepler.ps("kepler.yaml");
    let (daemon_pid, old_version) = status(&kepler);
    assert!(!old_version.contains(NEXT));
    let at_upgrade: BTreeMap<&String, u64> =
        names.iter().map(|n| (n, last_number(&kepler, n))).collect();

    upgrade(&kepler, &next_binary(&kepler));

    let (pid, version) = status(&kepler);
    assert_eq!(pid, daemon_pid, "the daemon keeps its pid");
    assert!(version.ends_with(&format!("+{NEXT}")), "version {version}");
    let after = kepler.ps("kepler.yaml");
    for name in &names {
        assert_eq!(
            after[name].pid(),
            before[name].pid(),
            "{name} keeps its pid"
        );
        assert_eq!(after[name].restarts(), before[name].restarts(), "{name}");
        assert_eq!(after[name].status(), "running", "{name}");
    }
    // The new daemon stores what they write from where the old one stopped.
    for name in &names {
        wait_until("lines after the upgrade", DEADLINE, || {
            last_number(&kepler, name) > at_upgrade[name] + 200
        });
    }
    kepler.kepler(&["stop"]).success();
    for name in &names {
        let count = assert_contiguous(name, &stored_lines(&kepler, name));
        assert!(
            count > at_upgrade[name],
            "{name}: {count} lines, {} at the upgrade",
            at_upgrade[name]
        );
    }
    let log = kepler.daemon_log();
    assert!(
        log.contains("resuming from the previous daemon's hand-over"),
        "{log}"
    );
    kepler.kepler(&["daemon", "stop"]).success();
    kepler.wait_daemon_exit();
}

#[test]
fn a_service_that_exits_during_the_hand_over_is_restarted_by_the_new_daemon() {
    let mut kepler = Kepler::new();
    let pause = kepler.dir().join("handover-paused");
    let pause_env = pause.to_str().unwrap().to_string();
    kepler.start_daemon_with(|c| {
        c.env("KEPLER_TEST_HANDOVER_PAUSE", &pause_env);
    });
    kepler.write(
        "kepler.yaml",
        "services:\n  flaky:\n    command: [sleep, '1000']\n    restart: on-failure\n  steady:\n    command: [sleep, '1001']\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let before = kepler.ps("kepler.yaml");
    let flaky = before["flaky"].pid().unwrap();
    let priority_before = niceness(kepler.daemon_pid().unwrap());
    assert!(priority_before < niceness(flaky), "the daemon runs ahead");

    let mut upgrading = kepler
        .command("kepler")
        .args(["daemon", "upgrade", "--binary"])
        .arg(next_binary(&kepler))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the hand-over pauses", DEADLINE, || pause.exists());
    // Reaping is paused now: this exit is left for the new daemon.
    kill(Pid::from_raw(flaky), Signal::SIGKILL).unwrap();
    fs::remove_file(&pause).unwrap();
    let output = wait_output(&mut upgrading);
    assert!(output.0, "upgrade failed: {}", output.1);

    let after = kepler.wait_for_service("kepler.yaml", "flaky", "restarted", |r| {
        r.status() == "running" && r.pid() != Some(flaky)
    });
    assert_eq!(after.restarts(), 1);
    // The new daemon raised itself from where the old one started, not from
    // the old one's raised niceness, and its services run where they did.
    assert_eq!(
        niceness(after.pid().unwrap()),
        niceness(before["steady"].pid().unwrap())
    );
    assert_eq!(niceness(kepler.daemon_pid().unwrap()), priority_before);
    let steady = kepler.service("kepler.yaml", "steady");
    assert_eq!(steady.pid(), before["steady"].pid());
    assert_eq!(steady.restarts(), 0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_failing_health_check_keeps_its_failure_count_across_an_upgrade() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  sick:\n    command: [sleep, '1002']\n    healthcheck:\n      test: [\"false\"]\n      interval: 200ms\n      retries: 1000\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let failures = |kepler: &Kepler| {
        kepler.service("kepler.yaml", "sick").0["health_failures"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("three failures", DEADLINE, || failures(&kepler) >= 3);
    let before = failures(&kepler);
    upgrade(&kepler, &next_binary(&kepler));
    assert!(failures(&kepler) >= before, "the count was reset");
    wait_until("counting on", DEADLINE, || failures(&kepler) > before);
    assert_eq!(kepler.service("kepler.yaml", "sick").restarts(), 0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn requests_in_flight_end_with_a_reconnect_error_and_the_next_ones_reach_the_new_daemon() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  idle:\n    command: [sleep, '1003']\n",
            writer("talker")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let mut follow = kepler
        .command("kepler")
        .args(["-f", "kepler.yaml", "logs", "--follow", "talker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut attached = kepler
        .command("kepler")
        .args(["-f", "kepler.yaml", "start", "idle"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both are being served: the follow has printed lines.
    let stdout = follow.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..20 {
        lines.next().unwrap().unwrap();
    }
    // Keep reading, so the follow never blocks on a full pipe.
    let drain = std::thread::spawn(move || lines.count());
    wait_until("the attached start is attached", DEADLINE, || {
        kepler.service("kepler.yaml", "idle").status() == "running"
    });

    upgrade(&kepler, &next_binary(&kepler));

    let status = wait_exit(&mut follow);
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("upgraded"), "logs --follow said: {stderr}");
    drain.join().unwrap();
    let (ok, output) = wait_output(&mut attached);
    assert!(!ok);
    assert!(output.contains("upgraded"), "attached start said: {output}");
    // The services were not touched, and a new follow works.
    assert_eq!(kepler.service("kepler.yaml", "idle").status(), "running");
    kepler.logs("kepler.yaml", &["--tail", "1", "talker"]);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn an_upgrade_the_new_binary_refuses_changes_nothing() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [sleep, '1004']\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let before = kepler.service("kepler.yaml", "web");
    let (pid, version) = status(&kepler);
    for (name, script) in [
        ("fails", "#!/bin/sh\nexit 1\n"),
        ("other-format", "#!/bin/sh\necho 'kepler-handover 99'\n"),
    ] {
        let path = kepler.write(name, script);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let run = kepler.kepler(&["daemon", "upgrade", "--binary", path.to_str().unwrap()]);
        run.failure().stderr_has("nothing was changed");
        assert_eq!(status(&kepler), (pid, version.clone()));
        let now = kepler.service("kepler.yaml", "web");
        assert_eq!(now.pid(), before.pid());
        assert_eq!(now.status(), "running");
    }
    // Still serving and still upgradable.
    upgrade(&kepler, &next_binary(&kepler));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_corrupt_hand_over_falls_back_to_recovery_without_losing_the_daemon() {
    let mut kepler = Kepler::new();
    kepler.start_daemon_with(|c| {
        c.env("KEPLER_TEST_CORRUPT_HANDOVER", "1");
    });
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [sleep, '1005']\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let old = kepler.service("kepler.yaml", "web").pid().unwrap();
    let (pid, _) = status(&kepler);

    upgrade(&kepler, &next_binary(&kepler));

    assert_eq!(status(&kepler).0, pid, "the daemon survived");
    // Recovery: the old process is stopped and the wanted service started.
    kepler.wait_for_service("kepler.yaml", "web", "started again", |r| {
        r.status() == "running" && r.pid().is_some_and(|p| p != old)
    });
    wait_until("the old process is gone", DEADLINE, || {
        !kepler_e2e::process_alive(old)
    });
    let log = kepler.daemon_log();
    assert!(
        log.contains("cannot resume from the hand-over"),
        "the log says nothing of the fallback:\n{log}"
    );
    kepler.kepler(&["stop"]).success();
}

/// Waits (bounded) for a child; whether it succeeded, and its output.
fn wait_output(child: &mut std::process::Child) -> (bool, String) {
    let status = wait_exit(child);
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut text).unwrap();
    }
    (status.success(), text)
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until("the client exits", DEADLINE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

#[test]
fn systemd_hears_reloading_then_ready_around_the_hand_over() {
    let mut kepler = Kepler::new();
    let socket = kepler.dir().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener.set_read_timeout(Some(DEADLINE)).unwrap();
    let value = socket.to_str().unwrap().to_string();
    kepler.start_daemon_with(|c| {
        c.env("NOTIFY_SOCKET", &value);
    });
    let receive = || {
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a message for systemd");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(receive().starts_with("READY=1"));

    upgrade(&kepler, &next_binary(&kepler));

    let reloading = receive();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready = receive();
    assert!(ready.starts_with("READY=1"), "{ready:?}");
}

#[test]
fn ps_run_during_upgrades_is_always_answered() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &format!("services:\n{}", writer("busy")));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let pid = kepler.service("kepler.yaml", "busy").pid();
    let next = next_binary(&kepler);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answered, failures) = std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            let (mut answered, mut failures) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let run = kepler.kepler(&["-f", "kepler.yaml", "ps"]);
                if run.ok() {
                    answered += 1;
                } else {
                    failures.push(run.to_string());
                }
            }
            (answered, failures)
        });
        for _ in 0..5 {
            upgrade(&kepler, &next);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        asking.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "ps failed during an upgrade:\n{}",
        failures.join("\n")
    );
    assert!(answered > 0);
    assert_eq!(kepler.service("kepler.yaml", "busy").pid(), pid);
    kepler.kepler(&["stop"]).success();
}

/// The inode of the TCP socket listening on `port` (from /proc/net/tcp).
fn listening_inode(port: u16) -> Option<String> {
    let table = fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local = fields.get(1)?;
        let listening = fields.get(3) == Some(&"0A");
        let ours = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()? == port;
        (listening && ours).then(|| fields[9].to_string())
    })
}

#[test]
fn the_metrics_endpoint_keeps_its_socket_across_an_upgrade() {
    let mut kepler = Kepler::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    kepler.start_daemon_with(|c| {
        c.env("KEPLER_METRICS_LISTEN", &address);
    });
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [sleep, '1006']\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let scrape = || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    };
    assert!(scrape().starts_with("HTTP/1.1 200"));
    let before = listening_inode(port).expect("the endpoint listens");

    upgrade(&kepler, &next_binary(&kepler));

    assert_eq!(
        listening_inode(port),
        Some(before),
        "the same socket listens"
    );
    let body = scrape();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let log = kepler.daemon_log();
    assert!(!log.contains("cannot listen on --metrics-listen"), "{log}");
    kepler.kepler(&["stop"]).success();
}
