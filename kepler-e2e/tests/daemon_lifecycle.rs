//! The daemon's own lifecycle: start, detach, single instance, stale files,
//! stop, signals.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use kepler_e2e::{process_alive, Kepler, TestUser};
use nix::sys::signal::Signal;
use nix::unistd::Group;

fn kepler_gid() -> u32 {
    Group::from_name("kepler")
        .unwrap()
        .expect("kepler group: run `sudo scripts/test-env`")
        .gid
        .as_raw()
}

#[test]
fn daemon_refuses_to_start_as_a_non_root_user() {
    let kepler = Kepler::new();
    let mut command = kepler.command("kepler-daemon");
    TestUser::member().apply(&mut command);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one-line reason expected: {stderr}"
    );
}

#[test]
fn state_dir_and_socket_belong_to_root_and_the_kepler_group() {
    let kepler = Kepler::started();
    // Members may enter the directory to reach the socket, never write it.
    let dir = std::fs::metadata(kepler.state_dir()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    assert_eq!((dir.uid(), dir.gid()), (0, kepler_gid()));

    let socket = std::fs::metadata(kepler.socket_path()).unwrap();
    assert!(socket.file_type().is_socket());
    assert_eq!(socket.permissions().mode() & 0o7777, 0o660);
    assert_eq!((socket.uid(), socket.gid()), (0, kepler_gid()));

    let pid = kepler.daemon_pid().expect("pid file holds the daemon pid");
    assert!(process_alive(pid));
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_naming_the_first() {
    let kepler = Kepler::started();
    let pid = kepler.daemon_pid().unwrap();
    let output = kepler.command("kepler-daemon").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    // The first daemon is unharmed.
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn a_new_daemon_starts_after_the_old_one_was_killed() {
    let mut kepler = Kepler::started();
    kepler.signal_daemon(Signal::SIGKILL);
    kepler.reap_killed_daemon();
    // The killed daemon leaves its socket and pid file behind.
    assert!(kepler.socket_path().exists());
    assert!(kepler.pid_path().exists());
    kepler.kepler(&["daemon", "status"]).failure();

    kepler.start_daemon();
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn detached_start_returns_only_once_the_daemon_answers() {
    let kepler = Kepler::new();
    kepler
        .kepler(&["daemon", "start", "-d"])
        .success()
        .stdout_has("kepler daemon started");
    // No retry: the very next command must find the daemon ready.
    kepler
        .kepler(&["daemon", "status"])
        .success()
        .stdout_has("kepler daemon is running");
    kepler.kepler(&["daemon", "stop"]).success();
}

#[test]
fn daemon_stop_returns_after_the_daemon_exited_and_cleaned_up() {
    let kepler = Kepler::new();
    kepler.kepler(&["daemon", "start", "-d"]).success();
    let pid = kepler.daemon_pid().unwrap();
    kepler
        .kepler(&["daemon", "stop"])
        .success()
        .stdout_has("kepler daemon stopped");
    assert!(!process_alive(pid), "daemon still alive");
    assert!(!kepler.socket_path().exists(), "socket left behind");
    assert!(!kepler.pid_path().exists(), "pid file left behind");
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut kepler = Kepler::started();
    kepler.signal_daemon(Signal::SIGTERM);
    assert_eq!(kepler.wait_daemon_exit(), Some(0));
    assert!(!kepler.socket_path().exists());
    assert!(!kepler.pid_path().exists());
}

#[test]
fn daemon_restart_replaces_the_running_daemon() {
    let kepler = Kepler::new();
    kepler.kepler(&["daemon", "start", "-d"]).success();
    let before = kepler.daemon_pid().unwrap();
    kepler.kepler(&["daemon", "restart", "-d"]).success();
    let after = kepler.daemon_pid().unwrap();
    assert_ne!(before, after);
    kepler.kepler(&["daemon", "status"]).success();
    kepler.kepler(&["daemon", "stop"]).success();
}

#[test]
fn commands_say_how_to_start_the_daemon_when_it_is_not_running() {
    let kepler = Kepler::new();
    kepler
        .kepler(&["daemon", "status"])
        .failure()
        .stderr_has("not running")
        .stderr_has("kepler daemon start");
    kepler
        .kepler(&["daemon", "stop"])
        .failure()
        .stderr_has("not running");
}

#[test]
fn daemon_status_reports_pid_version_and_uptime() {
    let kepler = Kepler::started();
    let pid = kepler.daemon_pid().unwrap();
    let run = kepler.kepler(&["daemon", "status"]);
    run.success()
        .stdout_has(&format!("pid:         {pid}"))
        .stdout_has(env!("CARGO_PKG_VERSION"))
        .stdout_has("uptime:");
}

#[test]
fn root_stops_a_daemon_of_another_protocol_version_with_sigterm() {
    // What an upgrade leaves behind: a daemon the new CLI cannot talk to.
    let kepler = Kepler::new();
    std::fs::create_dir_all(kepler.state_dir()).unwrap();
    let mut old = std::process::Command::new(env!("CARGO_BIN_EXE_old_daemon"))
        .arg(kepler.socket_path())
        .spawn()
        .unwrap();
    // The socket file appears at bind(), a moment before listen(): wait
    // until it takes connections.
    kepler_e2e::wait_until("the old daemon's socket", kepler_e2e::DEADLINE, || {
        std::os::unix::net::UnixStream::connect(kepler.socket_path()).is_ok()
    });
    kepler
        .kepler(&["daemon", "stop"])
        .success()
        .stderr_has("version mismatch")
        .stderr_has("SIGTERM")
        .stdout_has("kepler daemon stopped");
    let status = old.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
}
