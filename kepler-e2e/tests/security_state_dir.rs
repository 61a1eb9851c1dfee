//! A member against the state directory (issue #12, finding 1): it may reach
//! the socket and nothing else; what an older, group-writable layout let it
//! plant is never read, followed or trusted; one daemon per directory.
//!
//! Every attack runs as `kepler-test-a` (a member of `kepler`) at a shell.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kepler_e2e::{process_alive, wait_until, Kepler, TestUser, DEADLINE};
use nix::unistd::Group;

const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

fn kepler_gid() -> u32 {
    Group::from_name("kepler")
        .unwrap()
        .expect("the kepler group")
        .gid
        .as_raw()
}

/// The state directory as Kepler used to make it: `0770 root:kepler`, so
/// members could create, rename and delete anything in it.
fn old_layout(kepler: &Kepler) {
    let state = kepler.state_dir();
    std::fs::create_dir(state).unwrap();
    std::os::unix::fs::chown(state, Some(0), Some(kepler_gid())).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o770)).unwrap();
}

/// Waits for `child` to exit within the deadline; kills it and fails if it
/// hangs.
fn exits_in_time(mut child: Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung for {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `kepler daemon start -d` as root, which must return.
fn detached_start(kepler: &Kepler) {
    let child = kepler
        .command("kepler")
        .args(["daemon", "start", "-d"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = exits_in_time(child, "`kepler daemon start -d`");
    assert!(status.success(), "daemon start -d failed: {status}");
}

#[test]
fn a_member_can_reach_the_socket_but_write_nothing_in_the_state_directory() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write("root.yaml", SLEEPER);
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    for attack in [
        "mv state/configs state/configs.old",
        "mkdir state/configs.planted",
        "rm -f state/kepler.sock",
        "mv state/kepler.pid state/kepler.pid.old",
        "mkfifo state/daemon.log.planted",
        "ln -s /etc/passwd state/planted",
        "ls state/configs",
        "cat state/configs/*/snapshot.json",
        "touch state/configs/planted",
    ] {
        let run = kepler.sh_as(Some(&member), attack);
        assert!(!run.ok(), "a member could `{attack}`:\n{run}");
    }
    // What members need still works, and root's config is untouched.
    kepler.kepler_as(&member, &["daemon", "status"]).success();
    assert_eq!(kepler.service("root.yaml", "app").status(), "running");
    let root = std::fs::metadata(kepler.state_dir()).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o750);
    for entry in std::fs::read_dir(kepler.state_dir().join("configs")).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o700)
        );
    }
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
}

/// Start time of `pid` in clock ticks, as the daemon records it.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    kepler_e2e::stat_field(&stat, 22).unwrap().parse().unwrap()
}

#[test]
fn configs_planted_under_the_old_layout_never_run_as_root_nor_kill_anything() {
    let mut kepler = Kepler::new();
    let member = TestUser::member();
    kepler.shared_dir("out");
    old_layout(&kepler);
    // A process group the planted state claims as a service's.
    let mut victim = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let victim_pid = victim.id();

    // The member writes a config of its own, bakes it as Kepler stores
    // snapshots, and plants it with state saying root owns it and wants it up.
    kepler.write(
        "forged.yaml",
        "services:\n  pwn:\n    command: [\"sh\", \"-c\", \"id -u > out/pwned; exec sleep 1000\"]\n",
    );
    let check = kepler
        .command("kepler-daemon")
        .args(["check", "forged.yaml"])
        .output()
        .unwrap();
    assert!(check.status.success());
    kepler.write(
        "planted/expanded_config.yaml",
        &String::from_utf8(check.stdout).unwrap(),
    );
    kepler.write(
        "planted/state.json",
        &format!(
            r#"{{"owner_uid":0,"services":{{"pwn":{{"desired":true,"pgid":{victim_pid},"start_ticks":{}}}}}}}"#,
            start_ticks(victim_pid)
        ),
    );
    kepler
        .sh_as(
            Some(&member),
            "mkdir -p state/configs/0123456789abcdef && \
             cp planted/expanded_config.yaml planted/state.json state/configs/0123456789abcdef/",
        )
        .success();

    kepler.start_daemon();
    wait_until("the planted configs to be set aside", DEADLINE, || {
        kepler.daemon_log().contains("moved it to")
    });
    assert!(
        kepler.daemon_log().contains("owned by uid"),
        "{}",
        kepler.daemon_log()
    );
    assert!(
        process_alive(victim_pid as i32),
        "the victim group was killed"
    );
    let all = kepler.kepler(&["ps", "--all", "--json"]);
    assert_eq!(all.success().stdout.trim(), "[]", "{all}");
    assert!(!kepler.dir().join("out/pwned").exists());
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn a_fifo_planted_as_daemon_log_neither_hangs_nor_receives_the_log() {
    let kepler = Kepler::new();
    let member = TestUser::member();
    old_layout(&kepler);
    kepler
        .sh_as(Some(&member), "mkfifo -m 666 state/daemon.log")
        .success();
    detached_start(&kepler);
    let log = std::fs::symlink_metadata(kepler.state_dir().join("daemon.log")).unwrap();
    assert!(log.is_file(), "daemon.log is not a regular file");
    assert_eq!((log.uid(), log.mode() & 0o7777), (0, 0o600));
    kepler.kepler_as(&member, &["daemon", "status"]).success();
    kepler.kepler(&["daemon", "stop"]).success();
}

#[test]
fn planted_links_for_the_pid_file_log_and_socket_are_replaced_never_followed() {
    let kepler = Kepler::new();
    let member = TestUser::member();
    let victim = kepler.write("victim.txt", "keep\n");
    old_layout(&kepler);
    kepler
        .sh_as(
            Some(&member),
            &format!(
                "ln -s {v} state/kepler.pid && ln -s {v} state/daemon.log && mkdir state/kepler.sock",
                v = victim.display()
            ),
        )
        .success();
    detached_start(&kepler);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    let pid = std::fs::symlink_metadata(kepler.pid_path()).unwrap();
    assert!(pid.is_file());
    assert_eq!(pid.uid(), 0);
    let socket = std::fs::symlink_metadata(kepler.socket_path()).unwrap();
    assert!(socket.file_type().is_socket());
    kepler.kepler_as(&member, &["daemon", "status"]).success();
    kepler.kepler(&["daemon", "stop"]).success();
}

#[test]
fn a_second_daemon_is_refused_even_after_the_pid_file_is_removed() {
    let kepler = Kepler::started();
    let first = kepler.daemon_pid().unwrap();
    std::fs::remove_file(kepler.pid_path()).unwrap();
    let child = kepler
        .command("kepler-daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exits_in_time(child, "a second kepler-daemon");
    assert_eq!(status.code(), Some(1), "a second daemon started");
    // The first one still serves, on its own socket.
    assert!(process_alive(first));
    kepler.kepler(&["daemon", "status"]).success();
}
