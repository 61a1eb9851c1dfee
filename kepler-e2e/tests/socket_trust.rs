//! The CLI talks only to the daemon: before it sends anything, the socket
//! must be a root-owned socket and the process answering on it must run as
//! root. And only requests that may bake a config carry the caller's
//! environment, so looking at a config never bakes it.
//!
//! The impostor is `hostile_client impostor`, run as the member; it welcomes
//! whoever connects and writes down everything it is sent.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use kepler_e2e::{wait_until, Kepler, KillOnDrop, Run, TestUser, DEADLINE};
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};

const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

/// The impostor, as `user`, on `socket` (a path or `fd:N`); returns once it
/// listens.
fn impostor(
    user: &TestUser,
    socket: &str,
    log: &Path,
    setup: impl FnOnce(&mut Command),
) -> KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hostile_client"));
    command
        .args(["impostor", socket])
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    setup(&mut command);
    user.apply(&mut command);
    let mut child = KillOnDrop(command.spawn().expect("start the impostor"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening=1");
    child
}

/// `kepler <args>` as root, with the CLI looking for the daemon in `dir`.
fn kepler_at(kepler: &Kepler, dir: &Path, args: &[&str]) -> Run {
    let mut command = kepler.command("kepler");
    command
        .env(kepler_protocol::STATE_DIR_ENV, dir)
        .env("KEPLER_TEST_SECRET", "hunter2")
        .args(args);
    kepler.run(&mut command, args)
}

fn assert_told_nothing(log: &Path) {
    let seen = fs::read_to_string(log).unwrap_or_default();
    assert!(
        !seen.contains("hello") && !seen.contains("request") && !seen.contains("bytes"),
        "the impostor was sent something:\n{seen}"
    );
}

#[test]
fn roots_cli_sends_nothing_to_a_socket_a_member_owns() {
    let kepler = Kepler::new();
    let member = TestUser::member();
    kepler.write("app.yaml", SLEEPER);
    let evil = kepler.shared_dir("evil");
    let log = kepler.shared_dir("seen").join("impostor.log");
    let socket = evil.join(kepler_protocol::SOCKET_FILE);
    let child = impostor(&member, socket.to_str().unwrap(), &log, |_| {});

    for args in [
        &["-f", "app.yaml", "start", "-d"][..],
        &["-f", "app.yaml", "ps"],
        &["daemon", "status"],
        &["daemon", "stop"],
    ] {
        let run = kepler_at(&kepler, &evil, args);
        run.failure()
            .stderr_has("refusing to talk to")
            .stderr_has(&format!("owned by uid {}, not root", member.uid))
            .stderr_has("nothing was sent");
    }
    assert_told_nothing(&log);

    // A symlink to it is judged itself, not what it points to.
    let link_dir = kepler.shared_dir("link");
    std::os::unix::fs::symlink(&socket, link_dir.join(kepler_protocol::SOCKET_FILE)).unwrap();
    kepler_at(&kepler, &link_dir, &["daemon", "status"])
        .failure()
        .stderr_has("symbolic link");
    assert_told_nothing(&log);
    drop(child);
}

#[test]
fn roots_cli_sends_nothing_to_a_member_listening_on_a_root_owned_socket() {
    let kepler = Kepler::new();
    let member = TestUser::member();
    kepler.write("app.yaml", SLEEPER);
    let relay = kepler.dir().join("relay");
    fs::create_dir(&relay).unwrap();
    fs::set_permissions(&relay, fs::Permissions::from_mode(0o755)).unwrap();
    let path = relay.join(kepler_protocol::SOCKET_FILE);
    // Root creates the socket file; the member listens on it, so the kernel
    // names the member as whoever answers.
    let bound = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(bound.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    let fd = bound.as_raw_fd();
    let log = kepler.shared_dir("seen").join("impostor.log");
    let child = impostor(&member, &format!("fd:{fd}"), &log, |command| {
        // SAFETY: fcntl on a descriptor this process owns; async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop(bound);
    assert_eq!(
        fs::symlink_metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap(),
        0
    );

    for args in [
        &["-f", "app.yaml", "start", "-d"][..],
        &["daemon", "status"],
    ] {
        kepler_at(&kepler, &relay, args)
            .failure()
            .stderr_has("refusing to talk to")
            .stderr_has(&format!("runs as uid {}, not root", member.uid));
    }
    // The CLI connected (that is how it learnt who answers) but said nothing.
    wait_until("the impostor to see both connections end", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|seen| seen.matches("connection closed").count() == 2)
    });
    assert_told_nothing(&log);
    drop(child);
}

#[test]
fn looking_at_a_config_that_is_not_loaded_bakes_nothing() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(&member, "mine.yaml", SLEEPER);
    let configs = kepler.state_dir().join("configs");
    let loaded = || fs::read_dir(&configs).map_or(0, |entries| entries.count());

    let ps = kepler.kepler_as(&member, &["-f", "mine.yaml", "ps"]);
    ps.success().stdout_has("is not loaded");
    let json = kepler.kepler_as(&member, &["-f", "mine.yaml", "ps", "--json"]);
    assert_eq!(json.success().stdout.trim(), "[]");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "logs"])
        .success()
        .stderr_has("is not loaded");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "logs", "--follow"])
        .success()
        .stderr_has("is not loaded");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success()
        .stdout_has("nothing to stop");
    assert_eq!(loaded(), 0, "a look baked the config");

    // Starting is what loads it; then the same looks see it.
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    assert_eq!(loaded(), 1);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "ps"])
        .success()
        .stdout_has("running");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success()
        .stdout_has("stopped all services");
}
