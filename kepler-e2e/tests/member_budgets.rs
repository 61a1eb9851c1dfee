//! One member cannot starve the daemon: its connections, its requests in
//! flight and the environment it sends are bounded, root always gets
//! through, and a client that never reads cannot hold up `daemon stop`.
//!
//! The attacks run as the member through `hostile_client`, which prints one
//! `key=value` line and holds what it opened until its stdin closes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kepler_e2e::{wait_until, Kepler, KillOnDrop, TestUser, DEADLINE};

/// `hostile_client <args>` as `user`, and the line it printed.
fn hostile(user: &TestUser, args: &[&str]) -> (KillOnDrop, BTreeMap<String, String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hostile_client"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    user.apply(&mut command);
    let mut child = KillOnDrop(command.spawn().expect("start hostile_client"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // `reason=` runs to the end of the line; the other values are single words.
    let (fields, reason) = line
        .trim_end()
        .split_once(" reason=")
        .map_or((line.trim_end(), ""), |(fields, reason)| (fields, reason));
    let mut report: BTreeMap<String, String> = fields
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    report.insert("reason".into(), reason.to_owned());
    (child, report)
}

fn count(report: &BTreeMap<String, String>, key: &str) -> usize {
    report[key].parse().unwrap()
}

/// Closes the helper's stdin, which makes it let go and exit.
fn release(mut child: KillOnDrop) {
    drop(child.stdin.take());
    child.wait().unwrap();
}

/// Runs `command` to its end, failing the test if that takes over `limit`.
fn within(limit: Duration, command: &mut Command) -> (Duration, std::process::Output) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (started.elapsed(), child.wait_with_output().unwrap());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn root_gets_through_while_a_member_holds_every_connection_it_can() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let socket = kepler.socket_path();
    let (holder, report) = hostile(&member, &["hold", socket.to_str().unwrap(), "1100"]);
    assert_eq!(count(&report, "welcomed"), 64, "{report:?}");
    assert_eq!(count(&report, "stalled"), 0, "{report:?}");
    assert!(count(&report, "refused") >= 1, "{report:?}");
    assert!(
        report["reason"].contains(&format!("uid {} already has 64 open", member.uid)),
        "{report:?}"
    );

    // Root's pool is its own: answered at once, not after a timeout.
    let (took, output) = within(
        Duration::from_secs(5),
        kepler.command("kepler").args(["daemon", "status"]),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(took < Duration::from_secs(3), "daemon status took {took:?}");

    // The member itself is told why it gets no more.
    kepler
        .kepler_as(&member, &["daemon", "status"])
        .failure()
        .stderr_has("too many connections");
    release(holder);
    wait_until("the member's slots to come back", DEADLINE, || {
        kepler.kepler_as(&member, &["daemon", "status"]).ok()
    });
}

#[test]
fn a_members_requests_in_flight_are_bounded_over_all_its_connections() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let config = kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo up; exec sleep 1000\"]\n",
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    kepler.wait_for_log("mine.yaml", "app | up");

    // 4 connections x 64 follows: twice what one user may have running.
    let socket = kepler.socket_path();
    let args = [
        "follow",
        socket.to_str().unwrap(),
        config.to_str().unwrap(),
        "4",
        "64",
    ];
    let (follower, report) = hostile(&member, &args);
    assert_eq!(count(&report, "served"), 128, "{report:?}");
    assert_eq!(count(&report, "refused"), 128, "{report:?}");
    assert!(
        report["reason"].contains(&format!("uid {} already has 128 running", member.uid)),
        "{report:?}"
    );

    // Root is not held up, and the member is told why it is.
    let (took, output) = within(
        Duration::from_secs(5),
        kepler.command("kepler").args(["-f", "mine.yaml", "ps"]),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(took < Duration::from_secs(3), "root's ps took {took:?}");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "ps"])
        .failure()
        .stderr_has("too many requests");
    release(follower);
    wait_until("the member's requests to be served again", DEADLINE, || {
        kepler.kepler_as(&member, &["-f", "mine.yaml", "ps"]).ok()
    });
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn an_oversized_environment_is_refused_before_anything_is_baked() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let config = kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n",
    );
    let socket = kepler.socket_path();
    let start = |vars: &str, bytes: &str| {
        let args = [
            "start-env",
            socket.to_str().unwrap(),
            config.to_str().unwrap(),
            vars,
            bytes,
        ];
        let (child, report) = hostile(&member, &args);
        release(child);
        report
    };
    let report = start("5000", "8");
    assert_eq!(report["error"], "LimitReached", "{report:?}");
    assert!(
        report["reason"].contains("5000 variables, more than the 4096"),
        "{report:?}"
    );
    // 12 x 100 KB: under the request frame limit, over the environment's.
    let report = start("12", "100000");
    assert_eq!(report["error"], "LimitReached", "{report:?}");
    assert!(
        report["reason"].contains("more than the 1048576"),
        "{report:?}"
    );
    assert!(
        std::fs::read_dir(kepler.state_dir().join("configs")).map_or(0, |entries| entries.count())
            == 0,
        "the config was baked"
    );

    // The CLI says so before sending anything.
    let mut command = kepler.command("kepler");
    command.args(["-f", "mine.yaml", "start", "-d"]);
    for i in 0..12 {
        command.env(format!("KEPLER_TEST_BIG_{i}"), "x".repeat(100_000));
    }
    member.apply(&mut command);
    kepler
        .run(
            &mut command,
            &["start", "-d", "(with a 1.2 MB environment)"],
        )
        .failure()
        .stderr_has("more than the 1048576 kepler accepts");
}

#[test]
fn a_follower_that_never_reads_cannot_keep_daemon_stop_from_finishing() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  quiet:\n    command: [\"sh\", \"-c\", \"echo ready; exec sleep 1000\"]\n  \
         flood:\n    command: [\"sh\", \"-c\", \"seq 1 1000000; echo flooded; exec sleep 1000\"]\n",
    );
    kepler
        .kepler_as(
            &member,
            &["-f", "mine.yaml", "start", "-d", "--wait", "quiet"],
        )
        .success();
    kepler.wait_for_log("mine.yaml", "quiet | ready");

    // A follower whose output nobody reads, like a terminal paused with
    // Ctrl+S: once its pipe is full it stops reading the socket.
    let mut command = kepler.command("kepler");
    command
        .args(["-f", "mine.yaml", "logs", "--follow"])
        .stdout(Stdio::piped());
    member.apply(&mut command);
    let mut follower = KillOnDrop(command.spawn().unwrap());
    let mut stdout = follower.stdout.take().unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("quiet | ready") {
        let mut chunk = [0u8; 256];
        let n = stdout.read(&mut chunk).unwrap();
        assert!(n > 0, "the follower ended early");
        seen.extend_from_slice(&chunk[..n]);
    }
    // From here on nobody reads it.
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "flood"])
        .success();
    wait_until("the flood to be stored", Duration::from_secs(60), || {
        kepler
            .kepler(&["-f", "mine.yaml", "logs", "--tail", "1", "flood"])
            .stdout
            .contains("flood | flooded")
    });

    let (took, output) = within(
        Duration::from_secs(60),
        kepler.command("kepler").args(["daemon", "stop"]),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(took < Duration::from_secs(30), "daemon stop took {took:?}");
    drop((stdout, follower));
}
