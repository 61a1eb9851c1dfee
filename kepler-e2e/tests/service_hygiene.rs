//! What a member's services get, and what they can learn or send back: a
//! umask of their own, program lookup done as their user, no hard limit
//! above their user's, and no escape sequences into root's terminal.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kepler_e2e::{Kepler, KillOnDrop, TestUser, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn mode_of(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn services_get_umask_0022_unless_their_config_sets_one() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let out = kepler.shared_dir("out");
    let out = out.display();
    kepler.write_as(
        &member,
        "mine.yaml",
        &format!(
            r#"services:
  plain:
    command: ["sh", "-c", "touch {out}/plain; mkdir {out}/plain.d; exec sleep 1000"]
  strict:
    command: ["sh", "-c", "touch {out}/strict; exec sleep 1000"]
    umask: "0027"
    hooks:
      pre_start:
        run: "touch {out}/strict-hook"
"#
        ),
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    let file = |name: &str| kepler.dir().join("out").join(name);
    kepler_e2e::wait_until("the files to exist", DEADLINE, || {
        ["plain", "plain.d", "strict", "strict-hook"]
            .iter()
            .all(|name| file(name).exists())
    });
    assert_eq!(mode_of(&file("plain")), 0o644);
    assert_eq!(mode_of(&file("plain.d")), 0o755);
    assert_eq!(mode_of(&file("strict")), 0o640);
    assert_eq!(
        mode_of(&file("strict-hook")),
        0o640,
        "hooks get their service's"
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();

    kepler.write_as(
        &member,
        "bad.yaml",
        "services:\n  app:\n    command: [\"true\"]\n    umask: \"0778\"\n",
    );
    kepler
        .kepler_as(&member, &["-f", "bad.yaml", "start", "-d"])
        .failure()
        .stderr_has("bad.yaml:4:")
        .stderr_has("services.app.umask")
        .stderr_has("octal");
}

#[test]
fn program_lookup_tells_a_member_nothing_about_directories_only_root_can_read() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let private = kepler.dir().join("private");
    fs::create_dir(&private).unwrap();
    fs::write(private.join("present"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(private.join("present"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let path = private.display();
    kepler.write_as(
        &member,
        "mine.yaml",
        &format!(
            r#"services:
  probe_present:
    command: ["present"]
    environment: ["PATH={path}"]
  probe_absent:
    command: ["absent"]
    environment: ["PATH={path}"]
"#
        ),
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d"])
        .success();
    let failed = |name: &str| {
        kepler
            .wait_for_service("mine.yaml", name, "failed", |row| row.status() == "failed")
            .reason()
            .to_owned()
    };
    let present = failed("probe_present");
    let absent = failed("probe_absent");
    // The same answer whether or not the file is there.
    assert_eq!(
        present.replace("present", "X"),
        absent.replace("absent", "X")
    );
    assert!(
        present.contains("not found in the service's PATH"),
        "{present}"
    );
    assert!(
        present.contains(&format!("uid {} may run", member.uid)),
        "{present}"
    );
    assert!(present.contains("permission denied"), "{present}");

    // Root's own service still finds it, as root may look there.
    kepler.write(
        "root.yaml",
        &format!(
            "services:\n  app:\n    command: [\"present\"]\n    environment: [\"PATH={path}\"]\n"
        ),
    );
    kepler.kepler(&["-f", "root.yaml", "start", "-d"]).success();
    kepler.wait_for_service("root.yaml", "app", "exited 0", |row| {
        row.status() == "exited" && row.exit_code() == Some(0)
    });
}

/// The daemon's hard limit on open files in these tests.
const DAEMON_NOFILE_HARD: u64 = 4096;

fn nofile_of(pid: i32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Bit of `CAP_SYS_RESOURCE` in the capability sets (linux/capability.h).
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this (root) process may raise hard limits.
fn has_cap_sys_resource() -> bool {
    let effective = kepler_e2e::proc_status(std::process::id() as i32, "CapEff");
    u64::from_str_radix(&effective[0], 16).is_ok_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[test]
fn a_members_service_cannot_get_a_hard_limit_above_the_one_it_inherits() {
    let mut kepler = Kepler::new();
    kepler.start_daemon_with(|command| {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    1024,
                    DAEMON_NOFILE_HARD,
                )
                .map_err(std::io::Error::from)
            });
        }
    });
    let member = TestUser::member();
    let config = |fds: u64| {
        format!("services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    limits:\n      max_fds: {fds}\n")
    };
    kepler.write_as(&member, "more.yaml", &config(2 * DAEMON_NOFILE_HARD));
    kepler
        .kepler_as(&member, &["-f", "more.yaml", "start", "-d", "--wait"])
        .failure();
    let row = kepler.wait_for_service("more.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(
        row.reason()
            .contains("limits.max_fds = 8192 is above the hard limit 4096 that uid"),
        "{:?}",
        row.0
    );
    assert_eq!(row.pid(), None);

    // Lowering is the service's own business.
    kepler.write_as(&member, "less.yaml", &config(512));
    kepler
        .kepler_as(&member, &["-f", "less.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("less.yaml", "app").pid().unwrap();
    assert_eq!(nofile_of(pid), ("512".into(), "512".into()));
    kepler
        .kepler_as(&member, &["-f", "less.yaml", "stop"])
        .success();

    // Root's own services may still raise it, where root may.
    if !has_cap_sys_resource() {
        eprintln!(
            "SKIP: root raising a service's hard limit, because this machine's root lacks \
             CAP_SYS_RESOURCE"
        );
        return;
    }
    kepler.write("root.yaml", &config(2 * DAEMON_NOFILE_HARD));
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("root.yaml", "app").pid().unwrap();
    assert_eq!(nofile_of(pid), ("8192".into(), "8192".into()));
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
}

/// A member's service that tries to drive whoever reads its output.
const HOSTILE_OUTPUT: &str = r#"services:
  app:
    command: ["sh", "-c", "printf '\\033]0;pwned\\007\\033[2Jafter\\n'; exec sleep 1000"]
"#;
const SHOWN: &str = r"\x1b]0;pwned\x07\x1b[2Jafter";
const SENT: &[u8] = b"\x1b]0;pwned\x07\x1b[2Jafter";

/// `kepler <args>` as root with its stdout on a terminal; what the terminal
/// receives arrives on the channel.
fn on_a_terminal(kepler: &Kepler, args: &[&str]) -> (KillOnDrop, mpsc::Receiver<Vec<u8>>) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut command = kepler.command("kepler");
    command.args(args).stdout(Stdio::from(pty.slave));
    let child = KillOnDrop(command.spawn().unwrap());
    drop(command); // our copy of the terminal's slave end
    let (send, receive) = mpsc::channel();
    let mut master = fs::File::from(pty.master);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        // Ends with EIO once nothing holds the slave end any more.
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 || send.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    (child, receive)
}

/// Everything received until `until` is seen or the output ends.
fn read_until(output: &mpsc::Receiver<Vec<u8>>, until: &str) -> Vec<u8> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(until) {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match output.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "no {until:?} on the terminal: {:?}",
                    String::from_utf8_lossy(&seen)
                )
            }
        }
    }
    seen
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn interrupt_and_wait(child: KillOnDrop) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    child_exits(child);
}

fn child_exits(mut child: KillOnDrop) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "the CLI did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn escape_sequences_in_a_members_output_are_shown_not_sent_to_roots_terminal() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(&member, "mine.yaml", HOSTILE_OUTPUT);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    kepler.wait_for_log("mine.yaml", "after");

    // `kepler logs` on root's terminal.
    let (child, output) = on_a_terminal(&kepler, &["-f", "mine.yaml", "logs"]);
    let seen = read_until(&output, "after");
    assert!(String::from_utf8_lossy(&seen).contains(SHOWN), "{seen:?}");
    assert!(
        !seen.contains(&0x1b),
        "an escape reached the terminal: {seen:?}"
    );
    child_exits(child);

    // `kepler logs --follow`.
    let (child, output) = on_a_terminal(&kepler, &["-f", "mine.yaml", "logs", "--follow"]);
    let seen = read_until(&output, "after");
    assert!(String::from_utf8_lossy(&seen).contains(SHOWN), "{seen:?}");
    assert!(
        !seen.contains(&0x1b),
        "an escape reached the terminal: {seen:?}"
    );
    interrupt_and_wait(child);

    // `--raw` is asked for: the bytes exactly.
    let (child, output) = on_a_terminal(&kepler, &["-f", "mine.yaml", "logs", "--raw"]);
    let seen = read_until(&output, "after");
    assert!(contains(&seen, SENT), "{seen:?}");
    child_exits(child);

    // A pipe gets the bytes as before.
    let piped = kepler.kepler(&["-f", "mine.yaml", "logs"]);
    assert!(contains(piped.stdout.as_bytes(), SENT), "{piped}");

    // An attached start streams the same output, shown the same way.
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
    let (child, output) = on_a_terminal(&kepler, &["-f", "mine.yaml", "start"]);
    let seen = read_until(&output, "after");
    assert!(String::from_utf8_lossy(&seen).contains(SHOWN), "{seen:?}");
    assert!(
        !seen.contains(&0x1b),
        "an escape reached the terminal: {seen:?}"
    );
    interrupt_and_wait(child);
}
