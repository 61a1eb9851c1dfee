//! Log capture, storage policies and `kepler logs`, through the real binaries.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use kepler_e2e::{Kepler, DEADLINE};
use nix::sys::signal::Signal;

fn lines_of(run: &kepler_e2e::Run) -> Vec<String> {
    run.success();
    run.stdout.lines().map(String::from).collect()
}

/// A service that prints `count` numbered lines then stays up.
fn counter(count: usize, extra: &str) -> String {
    format!(
        "services:\n  counter:\n    command: [\"sh\", \"-c\", \"i=1; while [ $i -le {count} ]; do echo line $i; i=$((i+1)); done; echo done; sleep 1000\"]\n{extra}"
    )
}

fn wait_for_log_line(kepler: &Kepler, needle: &str) {
    kepler_e2e::wait_until(&format!("`{needle}` in kepler logs"), DEADLINE, || {
        kepler.kepler(&["logs"]).stdout.contains(needle)
    });
}

#[test]
fn stdout_and_stderr_are_captured_with_a_partial_last_line() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo out; echo err >&2; printf 'no newline'\"]\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "app", "exited", |r| r.status() == "exited");
    let lines = lines_of(&kepler.kepler(&["logs"]));
    assert!(lines.contains(&"app | out".to_string()), "{lines:?}");
    assert!(lines.contains(&"app | err".to_string()), "{lines:?}");
    assert!(lines.contains(&"app | no newline".to_string()), "{lines:?}");
}

#[test]
fn head_tail_and_service_filters_merge_in_time_order() {
    let kepler = Kepler::started();
    // Each line is printed once the test says so, and stored before the
    // next is asked for: the order is the test's, not the scheduler's.
    let service = |lines: &str| {
        format!(
            "[\"sh\", \"-c\", \"for l in {lines}; do while [ ! -e go-$l ]; do sleep 0.01; done; \
             echo $l; done; exec sleep 1000\"]"
        )
    };
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  a:\n    command: {}\n  b:\n    command: {}\n",
            service("a1 a2"),
            service("b1 b2")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    for line in ["a1", "b1", "a2", "b2"] {
        std::fs::write(kepler.dir().join(format!("go-{line}")), "").unwrap();
        wait_for_log_line(&kepler, line);
    }
    assert_eq!(
        lines_of(&kepler.kepler(&["logs"])),
        ["a | a1", "b | b1", "a | a2", "b | b2"]
    );
    assert_eq!(
        lines_of(&kepler.kepler(&["logs", "--head", "2"])),
        ["a | a1", "b | b1"]
    );
    assert_eq!(
        lines_of(&kepler.kepler(&["logs", "--tail", "1"])),
        ["b | b2"]
    );
    assert_eq!(
        lines_of(&kepler.kepler(&["logs", "b"])),
        ["b | b1", "b | b2"]
    );
    kepler
        .kepler(&["logs", "nope"])
        .failure()
        .stderr_has("no service named `nope`");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn hook_lines_are_tagged_and_hidden_by_no_hook() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo serving; sleep 1000\"]\n    hooks:\n      pre_start:\n        run: echo preparing\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "serving");
    let all = lines_of(&kepler.kepler(&["logs"]));
    assert_eq!(all, ["app[pre_start] | preparing", "app | serving"]);
    assert_eq!(
        lines_of(&kepler.kepler(&["logs", "--no-hook"])),
        ["app | serving"]
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_whole_log_larger_than_one_page_is_printed_complete_and_in_order() {
    // Pages stop at 50,000 lines or 8 MiB of text: `many` passes the first
    // bound, `wide` (150 lines of 60,000 bytes) the second, and stderr adds a
    // third file to the merge.
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  many:\n    command: [\"sh\", \"-c\", \"seq 1 60000 | sed 's/^/line /'; seq 1 1000 | sed 's/^/err /' >&2; echo done\"]\n  wide:\n    command: [\"sh\", \"-c\", \"i=1; while [ $i -le 150 ]; do printf '%060000d\\\\n' $i; i=$((i+1)); done; echo done\"]\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    for service in ["many", "wide"] {
        kepler.wait_for_service("kepler.yaml", service, "exited", |r| r.status() == "exited");
    }
    let run = kepler.kepler(&["logs", "--timestamps"]);
    let lines = lines_of(&run);
    assert_eq!(lines.len(), 60_000 + 1000 + 150 + 2);
    let text = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
            .filter(|rest| rest.starts_with(prefix))
            .map(|rest| &rest[prefix.len()..])
            .collect()
    };
    let many = text("many | line ");
    assert_eq!(many.len(), 60_000);
    assert!(many
        .iter()
        .enumerate()
        .all(|(i, n)| *n == (i + 1).to_string()));
    let errs = text("many | err ");
    assert!(errs
        .iter()
        .enumerate()
        .all(|(i, n)| *n == (i + 1).to_string()));
    assert_eq!(errs.len(), 1000);
    let wide = text("wide | ");
    assert_eq!(wide.len(), 151);
    for (i, line) in wide[..150].iter().enumerate() {
        assert_eq!(line.len(), 60_000, "wide line {} kept whole", i + 1);
        assert_eq!(line.trim_start_matches('0'), (i + 1).to_string());
    }
    // One time order over every file and page.
    let stamps: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "lines in time order"
    );

    // A head or tail longer than a page is paged too, and is exactly the
    // first or last lines of the whole log.
    let whole = lines_of(&kepler.kepler(&["logs"]));
    for (flag, n) in [
        ("--head", 55_000),
        ("--tail", 55_000),
        ("--tail", 150),
        ("--head", 61_200),
    ] {
        let part = lines_of(&kepler.kepler(&["logs", flag, &n.to_string()]));
        let expected = match flag {
            "--head" => &whole[..n.min(whole.len())],
            _ => &whole[whole.len() - n..],
        };
        assert!(part == expected, "{flag} {n}: {} lines", part.len());
    }
}

#[test]
fn max_size_keeps_the_newest_lines_in_two_segments_that_every_reader_joins() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &counter(20_000, "    logs:\n      max_size: 64K\n"),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "counter | done");
    let lines = lines_of(&kepler.kepler(&["logs"]));
    assert!(
        lines.len() < 20_000,
        "nothing was rotated away: {}",
        lines.len()
    );
    assert_eq!(lines.last().unwrap(), "counter | done");
    assert_eq!(lines[lines.len() - 2], "counter | line 20000");
    // What is kept is the newest run of lines, without holes.
    let first: usize = lines[0]
        .trim_start_matches("counter | line ")
        .parse()
        .unwrap();
    assert_eq!(lines.len() - 1, 20_000 - first + 1);
    // Two segments of at most half of max_size each, both in use.
    let configs = kepler.state_dir().join("configs");
    let dir = std::fs::read_dir(configs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let size = |name: &str| {
        std::fs::metadata(dir.join("logs").join(name))
            .unwrap()
            .len()
    };
    let (previous, current) = (size("counter.stdout.log.1"), size("counter.stdout.log"));
    assert!(
        previous <= 32 * 1024 && current <= 32 * 1024,
        "segments of {previous} and {current} bytes"
    );
    assert!(
        previous + current >= 32 * 1024,
        "at least half of max_size kept"
    );
    // Heads and tails, short (one message) and long (cursor pages), reach
    // across the segment boundary: exactly the first or last lines of the
    // whole log, each line once and whole.
    let per_segment = lines.len() / 2;
    for (flag, n) in [
        ("--head", 5),
        ("--tail", 5),
        ("--head", per_segment + 100),
        ("--tail", per_segment + 100),
        ("--tail", 150),
    ] {
        let part = lines_of(&kepler.kepler(&["logs", flag, &n.to_string()]));
        let expected = match flag {
            "--head" => &lines[..n],
            _ => &lines[lines.len() - n..],
        };
        assert!(part == expected, "{flag} {n}: {} lines", part.len());
    }
    kepler.kepler(&["stop"]).success();
}

#[test]
fn store_false_keeps_nothing_and_store_stdout_false_keeps_stderr() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  quiet:\n    command: [\"sh\", \"-c\", \"echo hidden; echo also >&2\"]\n    logs:\n      store: false\n  errs:\n    command: [\"sh\", \"-c\", \"echo hidden; echo kept >&2\"]\n    logs:\n      store:\n        stdout: false\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "quiet", "exited", |r| r.status() == "exited");
    kepler.wait_for_service("kepler.yaml", "errs", "exited", |r| r.status() == "exited");
    assert_eq!(lines_of(&kepler.kepler(&["logs"])), ["errs | kept"]);
}

#[test]
fn retention_defaults_clear_on_stop_and_retain_on_restart_and_exit() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &counter(1, ""));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "counter | done");
    kepler.kepler(&["restart", "-d", "--wait"]).success();
    kepler_e2e::wait_until("two runs in the log", DEADLINE, || {
        kepler
            .kepler(&["logs"])
            .stdout
            .matches("counter | done")
            .count()
            == 2
    });
    kepler.kepler(&["stop"]).success();
    assert_eq!(
        kepler.kepler(&["logs"]).stdout,
        "",
        "on_stop: clear is the default"
    );
}

/// The lines a service wrote under an earlier daemon are cleared by a stop
/// under this one, even when it wrote nothing new in between.
#[test]
fn a_stop_clears_lines_written_under_an_earlier_daemon() {
    let mut kepler = Kepler::started();
    let command = "command: [\"sh\", \"-c\", \"[ -e quiet ] || echo old-line; exec sleep 1000\"]";
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n    {command}\n    logs:\n      retention:\n        on_stop: retain\n"),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "app | old-line");
    kepler.kepler(&["stop"]).success();
    kepler.signal_daemon(Signal::SIGTERM);
    assert_eq!(kepler.wait_daemon_exit(), Some(0));

    // Quiet from now on, and back to the default: clear on stop.
    kepler.write("quiet", "");
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n    {command}\n"),
    );
    kepler.start_daemon();
    kepler.kepler(&["recreate"]).success();
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert_eq!(lines_of(&kepler.kepler(&["logs"])), ["app | old-line"]);
    kepler.kepler(&["stop"]).success();
    assert_eq!(kepler.kepler(&["logs"]).stdout, "", "on_stop: clear");
}

#[test]
fn retention_policies_can_be_turned_around() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  keep:\n    command: [\"sh\", \"-c\", \"echo keep-run; sleep 1000\"]\n    logs:\n      retention:\n        on_stop: retain\n        on_start: clear\n  exiter:\n    command: [\"sh\", \"-c\", \"echo exit-run\"]\n    logs:\n      retention:\n        on_exit: clear\n        on_stop: retain\n",
    );
    kepler.kepler(&["start", "-d", "--wait", "keep"]).success();
    wait_for_log_line(&kepler, "keep-run");
    kepler.kepler(&["stop"]).success();
    assert!(
        kepler.kepler(&["logs", "keep"]).stdout.contains("keep-run"),
        "on_stop: retain"
    );
    kepler.kepler(&["start", "-d", "--wait", "keep"]).success();
    wait_for_log_line(&kepler, "keep-run");
    assert_eq!(
        kepler
            .kepler(&["logs", "keep"])
            .stdout
            .matches("keep-run")
            .count(),
        1,
        "on_start: clear drops the previous run"
    );
    kepler.kepler(&["start", "-d", "exiter"]).success();
    kepler.wait_for_service("kepler.yaml", "exiter", "exited", |r| {
        r.status() == "exited"
    });
    assert!(
        !kepler
            .kepler(&["logs", "exiter"])
            .stdout
            .contains("exit-run"),
        "on_exit: clear"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn follow_prints_existing_then_new_lines_across_a_restart() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo run-$(cat n 2>/dev/null || echo 1); sleep 1000\"]\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "run-1");
    let (follower, lines) = spawn_follower(&kepler);
    assert_eq!(lines.recv_timeout(DEADLINE).unwrap(), "app | run-1");
    kepler.write("n", "2");
    kepler.kepler(&["restart", "-d", "--wait"]).success();
    assert_eq!(lines.recv_timeout(DEADLINE).unwrap(), "app | run-2");
    assert_eq!(interrupt(follower), Some(0), "Ctrl+C ends follow cleanly");
    kepler.kepler(&["stop"]).success();
}

/// `kepler logs --follow` with its output lines sent down a channel.
fn spawn_follower(kepler: &Kepler) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut follower = kepler
        .command("kepler")
        .args(["logs", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (follower, lines)
}

/// Ctrl+C for a follower; its exit code.
fn interrupt(mut follower: std::process::Child) -> Option<i32> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    follower.wait().unwrap().code()
}

#[test]
fn a_follower_keeps_up_across_many_rotations() {
    let kepler = Kepler::started();
    // Waits to be told to go, so the follower is live before the burst;
    // 20,000 lines of ~30 bytes rotate 8 KiB segments dozens of times.
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo ready; while [ ! -e go ]; do sleep 0.02; done; seq 1 20000 | sed 's/^/line /'; echo done; sleep 1000\"]\n    logs:\n      max_size: 16K\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "app | ready");
    let (follower, lines) = spawn_follower(&kepler);
    assert_eq!(lines.recv_timeout(DEADLINE).unwrap(), "app | ready");
    kepler.write("go", "");
    let mut numbers = Vec::new();
    loop {
        let line = lines.recv_timeout(DEADLINE).expect("the follower goes on");
        if line == "app | done" {
            break;
        }
        if let Some(n) = line.strip_prefix("app | line ") {
            numbers.push(n.parse::<u32>().unwrap());
        }
    }
    assert_eq!(
        numbers,
        (1..=20_000).collect::<Vec<_>>(),
        "every line, once, in order"
    );
    let stored = lines_of(&kepler.kepler(&["logs"]));
    assert!(
        !stored.contains(&"app | line 1".to_string()) && stored.len() < 3000,
        "the log was rotated meanwhile ({} lines kept)",
        stored.len()
    );
    assert_eq!(interrupt(follower), Some(0));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn buffered_lines_reach_the_log_when_the_service_goes_quiet() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo one; echo two >&2; echo three; sleep 1000\"]\n    logs:\n      buffer_size: 16K\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // stdout and stderr are buffered and flushed apart: wait for both.
    wait_for_log_line(&kepler, "app | three");
    wait_for_log_line(&kepler, "app | two");
    let mut lines = lines_of(&kepler.kepler(&["logs"]));
    // stdout and stderr are separate pipes: only each one's order is fixed.
    let stdout_order: Vec<&String> = lines.iter().filter(|l| !l.ends_with("two")).collect();
    assert_eq!(stdout_order, ["app | one", "app | three"]);
    lines.sort();
    assert_eq!(lines, ["app | one", "app | three", "app | two"]);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn logs_survive_a_daemon_sigkill_and_restart() {
    let mut kepler = Kepler::started();
    kepler.write("kepler.yaml", &counter(500, ""));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "counter | done");
    kepler.signal_daemon(Signal::SIGKILL);
    kepler.reap_killed_daemon();
    kepler.start_daemon();
    let lines = lines_of(&kepler.kepler(&["logs", "--head", "501"]));
    assert_eq!(lines.len(), 501);
    assert_eq!(lines[0], "counter | line 1");
    assert_eq!(lines[500], "counter | done");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn logs_survive_a_clean_daemon_restart() {
    let kepler = Kepler::new();
    kepler.kepler(&["daemon", "start", "-d"]).success();
    kepler.write("kepler.yaml", &counter(3, ""));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_log_line(&kepler, "counter | done");
    kepler.kepler(&["daemon", "stop"]).success();
    kepler.kepler(&["daemon", "start", "-d"]).success();
    let out = kepler.kepler(&["logs", "--head", "4"]);
    out.success()
        .stdout_has("counter | line 1")
        .stdout_has("counter | done");
    kepler.kepler(&["stop"]).success();
    kepler.kepler(&["daemon", "stop"]).success();
}

#[test]
fn an_overlong_line_is_split_not_dropped() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  wide:\n    command: [\"sh\", \"-c\", \"printf '%0150000d' 0 | tr 0 x; echo; echo after\"]\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "wide", "exited", |r| r.status() == "exited");
    let lines = lines_of(&kepler.kepler(&["logs"]));
    let xs: usize = lines
        .iter()
        .filter(|l| l.starts_with("wide | x"))
        .map(|l| l.len() - "wide | ".len())
        .sum();
    assert_eq!(xs, 150_000, "every byte kept");
    assert!(lines.iter().filter(|l| l.starts_with("wide | x")).count() >= 3);
    assert_eq!(lines.last().unwrap(), "wide | after");
}

/// `2026-11-23T18:19:25.123456Z rest` without its time, or `None` when the
/// line does not start with one.
fn after_time(line: &str) -> Option<&str> {
    let (time, rest) = line.split_once(' ')?;
    let shaped = time.len() == 27
        && time.ends_with('Z')
        && time.as_bytes()[10] == b'T'
        && time[..4].bytes().all(|b| b.is_ascii_digit());
    shaped.then_some(rest)
}

/// Each line of `lines` that mentions `service`, and whether it had a time.
fn shown(lines: &[String], text: &str) -> (String, bool) {
    let line = lines
        .iter()
        .find(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in {lines:?}"));
    match after_time(line) {
        Some(rest) => (rest.to_string(), true),
        None => (line.clone(), false),
    }
}

#[test]
fn logs_timestamp_shows_that_services_lines_with_their_time_everywhere() {
    let kepler = Kepler::started();
    // `stamped` takes the global `timestamp: true`; `plain` turns it off.
    kepler.write(
        "kepler.yaml",
        "kepler:\n  logs:\n    timestamp: true\nservices:\n  stamped:\n    command: [\"sh\", \"-c\", \"echo hello stamped\"]\n  plain:\n    command: [\"sh\", \"-c\", \"echo hello plain\"]\n    logs:\n      timestamp: false\n",
    );
    let expect = |lines: &[String], all: bool, how: &str| {
        assert_eq!(
            shown(lines, "hello stamped"),
            ("stamped | hello stamped".to_string(), true),
            "{how}: {lines:?}"
        );
        assert_eq!(
            shown(lines, "hello plain"),
            ("plain | hello plain".to_string(), all),
            "{how}: {lines:?}"
        );
    };

    let attached = lines_of(&kepler.kepler(&["start"]));
    expect(&attached, false, "attached start");
    expect(&lines_of(&kepler.kepler(&["logs"])), false, "logs");
    expect(
        &lines_of(&kepler.kepler(&["logs", "--tail", "5"])),
        false,
        "a short tail",
    );
    expect(
        &lines_of(&kepler.kepler(&["logs", "--tail", "5000"])),
        false,
        "a long tail",
    );
    expect(
        &lines_of(&kepler.kepler(&["logs", "--timestamps"])),
        true,
        "--timestamps",
    );

    let (follower, lines) = spawn_follower(&kepler);
    let followed: Vec<String> = (0..2)
        .map(|_| lines.recv_timeout(DEADLINE).unwrap())
        .collect();
    assert_eq!(interrupt(follower), Some(0));
    expect(&followed, false, "logs --follow");
}
