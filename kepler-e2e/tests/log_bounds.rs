//! What logs may cost the daemon: memory and disk stay bounded whatever
//! services write and whatever a kepler-group member asks for. Memory is
//! read from the daemon's /proc/<pid>/status (VmHWM, the peak), the bytes
//! pushed through it from /proc/<pid>/io; each wait is for one of those to
//! move, with a deadline.
//!
//! The attacks run as `kepler-test-a` on a config it owns, the way a member
//! would try them from its own account.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kepler_e2e::{proc_status, wait_until, Kepler, TestUser};

/// Floods can take a while to push hundreds of MB through a debug build on
/// a loaded machine.
const FLOOD_DEADLINE: Duration = Duration::from_secs(120);
const MB: u64 = 1024 * 1024;

/// A line of 100 bytes, newline included, printed forever.
fn flood(name: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    command: [\"yes\", \"{}\"]\n{extra}",
        "x".repeat(98)
    )
}

fn kb_of(pid: i32, key: &str) -> u64 {
    proc_status(pid, key)[0].parse().unwrap()
}

/// Bytes `pid` (a flooding service) has written so far: it blocks once its
/// pipe is full, so this is what the daemon took from the pipe, give or take
/// the pipe's size. (The daemon's own `rchar` misses reads made through
/// io_uring.)
fn written_bytes(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until the flooding service `pid` has pushed `bytes` more through
/// the daemon.
fn wait_for_bytes_logged(pid: i32, bytes: u64) {
    let start = written_bytes(pid);
    wait_until(
        &format!("{} MB through the daemon", bytes / MB),
        FLOOD_DEADLINE,
        || written_bytes(pid) - start >= bytes,
    );
}

/// Writes a config that belongs to `user` (its file is theirs).
fn owned_config(kepler: &Kepler, user: &TestUser, name: &str, text: &str) -> PathBuf {
    let path = kepler.write(name, text);
    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
    path
}

/// `kepler -f <config> logs --follow <args>` as `user`, whose output nobody
/// reads yet: like a terminal paused with Ctrl+S, it soon stops reading its
/// socket.
fn stalled_follower(kepler: &Kepler, user: &TestUser, config: &str, args: &[&str]) -> Child {
    let mut command = kepler.command("kepler");
    command
        .args(["-f", config, "logs", "--follow"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    user.apply(&mut command);
    command.spawn().unwrap()
}

/// The log directory of the only config loaded.
fn logs_dir(kepler: &Kepler) -> PathBuf {
    let configs = kepler.state_dir().join("configs");
    let config = std::fs::read_dir(configs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    config.join("logs")
}

fn size_of(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_follower_that_stops_reading_does_not_grow_the_daemon_and_learns_what_it_missed() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    owned_config(
        &kepler,
        &member,
        "flood.yaml",
        &format!(
            "services:\n{}",
            flood("flood", "    logs:\n      max_size: 20M\n")
        ),
    );
    kepler
        .kepler_as(&member, &["-f", "flood.yaml", "start", "-d"])
        .success();
    let pid = kepler.daemon_pid().unwrap();
    let flooder = kepler
        .wait_for_service("flood.yaml", "flood", "running", |row| row.pid().is_some())
        .pid()
        .unwrap();
    let mut follower = stalled_follower(&kepler, &member, "flood.yaml", &[]);
    wait_for_bytes_logged(flooder, 200 * MB);
    let peak = kb_of(pid, "VmHWM") / 1024;
    assert!(
        peak <= 64,
        "the daemon peaked at {peak} MB while a follower did not read"
    );

    // Reading again, the follower gets lines and is told how many it missed.
    let stdout = follower.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let note = loop {
        let line = lines
            .recv_timeout(FLOOD_DEADLINE)
            .expect("the follower goes on");
        if line.starts_with("kepler | ") {
            break line;
        }
    };
    assert!(
        note.contains("lines were written while this client was not reading"),
        "{note}"
    );
    let missed: u64 = note
        .trim_start_matches("kepler | (")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(missed > 0, "{note}");
    let _ = follower.kill();
    let _ = follower.wait();
    kepler
        .kepler_as(&member, &["-f", "flood.yaml", "stop"])
        .success();
}

#[test]
fn four_follows_with_a_huge_tail_stream_the_backlog_in_pages() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    // A million short lines: a whole tail of it as one list of lines in
    // memory would take over 100 MB per follow.
    owned_config(
        &kepler,
        &member,
        "big.yaml",
        "services:\n  big:\n    command: [\"sh\", \"-c\", \"seq 1 1000000; echo done; sleep 1000\"]\n    logs:\n      retention:\n        on_stop: retain\n",
    );
    kepler
        .kepler_as(&member, &["-f", "big.yaml", "start", "-d"])
        .success();
    wait_until("the whole log stored", FLOOD_DEADLINE, || {
        kepler
            .kepler_as(&member, &["-f", "big.yaml", "logs", "--tail", "1"])
            .stdout
            .contains("big | done")
    });
    let pid = kepler.daemon_pid().unwrap();
    let before = kb_of(pid, "VmRSS") / 1024;
    let huge = (1u64 << 63).to_string();
    let mut followers: Vec<Child> = (0..4)
        .map(|_| stalled_follower(&kepler, &member, "big.yaml", &["--tail", &huge]))
        .collect();
    // Each gets its first lines, then stops reading: the daemon must hold a
    // page or two per follow, not the tail.
    for follower in &mut followers {
        let mut first = [0u8; 4096];
        let n = follower.stdout.as_mut().unwrap().read(&mut first).unwrap();
        assert!(
            String::from_utf8_lossy(&first[..n]).starts_with("big | 1\n"),
            "the backlog starts at the first line"
        );
    }
    let peak = kb_of(pid, "VmHWM") / 1024;
    assert!(
        peak <= before + 64,
        "four follows took the daemon from {before} MB to a peak of {peak} MB"
    );
    for mut follower in followers {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    kepler
        .kepler_as(&member, &["-f", "big.yaml", "stop"])
        .success();
}

#[test]
fn a_buffer_size_of_500g_is_refused_at_its_line() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    owned_config(
        &kepler,
        &member,
        "huge.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    logs:\n      buffer_size: 500G\n",
    );
    let run = kepler.kepler_as(&member, &["-f", "huge.yaml", "start", "-d"]);
    run.failure()
        .stderr_has("huge.yaml:5:")
        .stderr_has("buffer_size is at most 1M");
}

#[test]
fn six_flooding_services_cost_the_daemon_a_bounded_amount_of_memory() {
    let kepler = Kepler::started();
    let services: String = (1..=6)
        .map(|i| flood(&format!("flood{i}"), "    logs:\n      max_size: 20M\n"))
        .collect();
    kepler.write("kepler.yaml", &format!("services:\n{services}"));
    kepler.kepler(&["start", "-d"]).success();
    let pid = kepler.daemon_pid().unwrap();
    // Every stream has rotated at least once.
    let logs = logs_dir(&kepler);
    wait_until("every flood's log to rotate", FLOOD_DEADLINE, || {
        (1..=6).all(|i| logs.join(format!("flood{i}.stdout.log.1")).exists())
    });
    let peak = kb_of(pid, "VmHWM") / 1024;
    assert!(peak <= 64, "six floods took the daemon to {peak} MB");
    for i in 1..=6 {
        let stream = logs.join(format!("flood{i}.stdout.log"));
        let disk = size_of(&stream) + size_of(&logs.join(format!("flood{i}.stdout.log.1")));
        assert!(disk <= 20 * MB, "flood{i} uses {disk} bytes of disk");
    }
    kepler.kepler(&["stop"]).success();
}

#[test]
fn disk_per_stream_stays_under_max_size_under_a_flood() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}",
            flood("flood", "    logs:\n      max_size: 64K\n")
        ),
    );
    kepler.kepler(&["start", "-d"]).success();
    let logs = logs_dir(&kepler);
    let (current, previous) = (
        logs.join("flood.stdout.log"),
        logs.join("flood.stdout.log.1"),
    );
    // Watched across many rotations (each gives the previous segment a new
    // first record); at no point does the stream use more than max_size.
    let mut firsts = std::collections::HashSet::new();
    let mut largest = 0;
    wait_until("40 rotations", FLOOD_DEADLINE, || {
        let mut stamp = [0u8; 16];
        if let Ok(mut file) = std::fs::File::open(&previous) {
            if file.read_exact(&mut stamp).is_ok() {
                firsts.insert(stamp);
            }
        }
        let used = size_of(&previous) + size_of(&current);
        largest = largest.max(used);
        assert!(used <= 64 * 1024, "the stream uses {used} bytes");
        firsts.len() >= 40
    });
    assert!(largest >= 32 * 1024, "at least half of max_size is kept");
    let kept = kepler.kepler(&["logs"]);
    let lines: Vec<&str> = kept.success().stdout.lines().collect();
    assert!(lines
        .iter()
        .all(|l| *l == format!("flood | {}", "x".repeat(98))));
    kepler.kepler(&["stop"]).success();
}
