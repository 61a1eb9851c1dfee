//! Many services on one daemon: ten thousand `sleep`s started, listed and
//! stopped; and a daemon whose open-file limit cannot be raised, which
//! fails the services it has no descriptors for, saying which limit to
//! raise, while everything else keeps working.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use kepler_e2e::{niceness, niceness_at, pids_with_arg, wait_until, Kepler, Run};

/// `CAP_SYS_RESOURCE`, which lets root raise a hard limit.
const CAP_SYS_RESOURCE: libc::c_ulong = 24;

/// A config of `count` services running `sleep <marker>`.
fn sleepers(count: usize, marker: &str) -> String {
    let mut config = String::from("services:\n");
    for i in 0..count {
        config.push_str(&format!("  s{i}:\n    command: [sleep, \"{marker}\"]\n"));
    }
    config
}

/// A `sleep` argument no other test uses, so this test's processes can be
/// counted in /proc.
fn marker(tag: u32) -> String {
    format!("{tag}{}", std::process::id())
}

/// Starts the daemon with an open-file limit of `limit` that it may not
/// raise (no `CAP_SYS_RESOURCE`), with `env` set.
fn start_limited_daemon(kepler: &mut Kepler, limit: u64, env: &[(&str, &str)]) {
    kepler.start_daemon_with(|command: &mut Command| {
        command.envs(env.iter().copied());
        // SAFETY: only async-signal-safe calls (setrlimit, prctl) between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0
                    || libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
}

/// Whether this process may raise hard limits.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    effective & (1 << CAP_SYS_RESOURCE) != 0
}

fn daemon_status(kepler: &Kepler) -> String {
    let run = kepler.kepler(&["daemon", "status"]);
    run.success();
    run.stdout.clone()
}

#[test]
fn ten_thousand_services_start_list_and_stop_leaving_nothing_behind() {
    const COUNT: usize = 10_000;
    let kepler = Kepler::started();
    let marker = marker(7);
    kepler.write("scale.yaml", &sleepers(COUNT, &marker));

    kepler
        .kepler(&[
            "-f",
            "scale.yaml",
            "start",
            "-d",
            "--wait",
            "--timeout",
            "600s",
        ])
        .success();
    let ps = kepler.ps("scale.yaml");
    assert_eq!(ps.len(), COUNT, "ps lists every service");
    let not_running: Vec<_> = ps
        .iter()
        .filter(|(_, row)| row.status() != "running")
        .map(|(name, row)| format!("{name}: {} {}", row.status(), row.reason()))
        .take(5)
        .collect();
    assert!(not_running.is_empty(), "not running: {not_running:?}");
    assert_eq!(pids_with_arg(&marker).len(), COUNT);
    // The table streams too (it is what people look at).
    let table = kepler.kepler(&["-f", "scale.yaml", "ps"]);
    table.success();
    assert_eq!(
        table.stdout.matches("running").count(),
        COUNT,
        "{}",
        &table.stdout[..500]
    );
    let status = daemon_status(&kepler);
    assert!(status.contains("open files:"), "{status}");

    kepler.kepler(&["-f", "scale.yaml", "stop"]).success();
    wait_until("every sleep to be gone", Duration::from_secs(60), || {
        pids_with_arg(&marker).is_empty()
    });
    let ps = kepler.ps("scale.yaml");
    assert!(ps.values().all(|row| row.status() == "stopped"));
}

#[test]
fn daemon_raises_its_open_file_limit_and_services_keep_theirs() {
    let mut kepler = Kepler::new();
    // Started with 4096 (soft) of 8192 (hard): root raises both to fs.nr_open.
    kepler.start_daemon_with(|command: &mut Command| unsafe {
        command.pre_exec(|| {
            let rlimit = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 8192,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    });
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = kepler.daemon_pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let status = daemon_status(&kepler);
    if has_cap_sys_resource() {
        assert_eq!(
            numbers,
            [nr_open.to_string(), nr_open.to_string()],
            "{line}"
        );
        assert!(status.contains(&format!("limit {nr_open},")), "{status}");
    } else {
        // A root without CAP_SYS_RESOURCE (a container) keeps its hard limit.
        eprintln!(
            "SKIP: the raise to fs.nr_open is not checked because this root lacks \
             CAP_SYS_RESOURCE; checking the fallback to the hard limit instead"
        );
        assert_eq!(numbers, ["8192", "8192"], "{line}");
        assert!(
            status.contains("limit 8192,") && status.contains("cannot raise it to fs.nr_open"),
            "{status}"
        );
    }
    assert!(status.contains("services get 4096"), "{status}");

    let marker = marker(8);
    kepler.write(
        "limits.yaml",
        &format!(
            "services:\n  plain:\n    command: [sleep, \"{marker}\"]\n  \
             capped:\n    command: [sleep, \"{marker}\"]\n    limits:\n      max_fds: 300\n"
        ),
    );
    kepler
        .kepler(&["-f", "limits.yaml", "start", "-d", "--wait"])
        .success();
    let ps = kepler.ps("limits.yaml");
    let fds = |name: &str| {
        let pid = ps[name].pid().unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .skip(3)
            .take(2)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(fds("plain"), ["4096", "8192"]);
    assert_eq!(fds("capped"), ["300", "300"]);
}

/// Output pipes held as descriptors (io_uring turned off): a daemon stuck
/// at 256 open files runs what it can, fails the rest naming the limit,
/// and keeps answering, logging and stopping.
#[test]
fn short_of_descriptors_the_excess_services_fail_naming_the_limit() {
    const COUNT: usize = 150;
    let mut kepler = Kepler::new();
    start_limited_daemon(&mut kepler, 256, &[("KEPLER_IO_URING", "off")]);
    let status = daemon_status(&kepler);
    assert!(status.contains("limit 256, 32 kept in reserve"), "{status}");
    assert!(status.contains("output pipes are descriptors"), "{status}");

    let marker = marker(9);
    // A few say they are up (and so hold a log file as well as their pipes).
    let mut config = String::from("services:\n");
    for i in 0..5 {
        config.push_str(&format!(
            "  atalk{i}:\n    command: [sh, -c, 'echo \"$1 is up\"; exec sleep \"$0\"', \"{marker}\", atalk{i}]\n"
        ));
    }
    config.push_str(&sleepers(COUNT - 5, &marker)["services:\n".len()..]);
    kepler.write("many.yaml", &config);
    // Some fail, so the wait reports a failure.
    start_many(&kepler);

    let ps = kepler.ps("many.yaml");
    assert_eq!(ps.len(), COUNT);
    let running: Vec<_> = ps
        .iter()
        .filter(|(_, row)| row.status() == "running")
        .map(|(name, _)| name.clone())
        .collect();
    let failed: Vec<_> = ps.values().filter(|row| row.status() == "failed").collect();
    assert!(running.len() > 20, "only {} running", running.len());
    assert!(
        !failed.is_empty(),
        "all {} running: the limit was not reached",
        running.len()
    );
    assert_eq!(running.len() + failed.len(), COUNT);
    for row in &failed {
        let reason = row.reason();
        assert!(
            reason.contains("out of file descriptors")
                && reason.contains("raise the daemon's open-file limit"),
            "{reason}"
        );
    }
    wait_until(
        "the running services' sleeps",
        Duration::from_secs(30),
        || pids_with_arg(&marker).len() == running.len(),
    );
    // Connections, logs and state still work from the reserve.
    assert!(daemon_status(&kepler).contains("limit 256"));
    let talkers: Vec<_> = running
        .iter()
        .filter(|name| name.starts_with("atalk"))
        .collect();
    assert!(!talkers.is_empty(), "no talker runs: {running:?}");
    for name in talkers {
        kepler.wait_for_log("many.yaml", &format!("{name} is up"));
    }

    stop_many(&kepler, &marker);
    // With the descriptors back, a failed service starts.
    let name = ps
        .iter()
        .find(|(_, row)| row.status() == "failed")
        .map(|(name, _)| name.clone())
        .unwrap();
    kepler
        .kepler(&["-f", "many.yaml", "start", "-d", "--wait", &name])
        .success();
    assert_eq!(kepler.service("many.yaml", &name).status(), "running");
    kepler.kepler(&["-f", "many.yaml", "stop"]).success();
}

/// Starts `many.yaml` and waits for its services to be up.
fn start_many(kepler: &Kepler) -> Run {
    kepler.kepler(&[
        "-f",
        "many.yaml",
        "start",
        "-d",
        "--wait",
        "--timeout",
        "120s",
    ])
}

/// Stops `many.yaml` and waits for its `sleep <marker>`s to be gone.
fn stop_many(kepler: &Kepler, marker: &str) {
    kepler.kepler(&["-f", "many.yaml", "stop"]).success();
    wait_until("every sleep to be gone", Duration::from_secs(30), || {
        pids_with_arg(marker).is_empty()
    });
}

/// A daemon stuck at `limit` open files whose services' output pipes are
/// held by io_uring; `None`, after a visible skip, where they are not.
fn limited_daemon_holding_pipes_in_io_uring(limit: u64) -> Option<Kepler> {
    let mut kepler = Kepler::new();
    start_limited_daemon(&mut kepler, limit, &[]);
    let status = daemon_status(&kepler);
    if !status.contains("held by io_uring") {
        eprintln!("SKIP: output pipes are not held by io_uring here: {status}");
        return None;
    }
    Some(kepler)
}

/// Output pipes held by io_uring cost the daemon no descriptor: stuck at
/// 256 open files, it still runs 300 services (more rings as they fill).
#[test]
fn pipes_held_by_io_uring_run_more_services_than_the_limit() {
    const COUNT: usize = 300;
    let Some(kepler) = limited_daemon_holding_pipes_in_io_uring(256) else {
        return;
    };
    let marker = marker(10);
    kepler.write("many.yaml", &sleepers(COUNT, &marker));
    start_many(&kepler).success();
    assert_eq!(pids_with_arg(&marker).len(), COUNT);
    stop_many(&kepler, &marker);
}

/// Reads over more streams than a daemon stuck at 1,024 open files could
/// open at once next to the log files its services write (one per stream):
/// a whole `logs`, a `--head` and a follow's backlog read the streams one at
/// a time.
#[test]
fn logs_over_more_streams_than_descriptors_left_read_them_one_at_a_time() {
    const COUNT: usize = 300;
    // Without io_uring each service also holds its two pipes: 1,024
    // descriptors would not leave room for the services themselves.
    let Some(kepler) = limited_daemon_holding_pipes_in_io_uring(1024) else {
        return;
    };
    let marker = marker(11);
    let mut config = String::from("services:\n");
    for i in 0..COUNT {
        config.push_str(&format!(
            "  s{i}:\n    command: [sh, -c, \"echo out s{i}; echo err s{i} >&2; exec sleep {marker}\"]\n"
        ));
    }
    kepler.write("many.yaml", &config);
    start_many(&kepler).success();
    let stored = |text: &str| text.matches(" | out s").count() + text.matches(" | err s").count();
    wait_until("every line to be stored", Duration::from_secs(60), || {
        let tail = kepler.kepler(&["-f", "many.yaml", "logs", "--tail", "1000"]);
        stored(&tail.success().stdout) == 2 * COUNT
    });

    let all = kepler.logs("many.yaml", &[]);
    assert_eq!(stored(&all), 2 * COUNT, "{}", &all[..all.len().min(500)]);
    for i in [0, 1, 150, COUNT - 1] {
        assert!(
            all.contains(&format!("s{i} | out s{i}\n")),
            "s{i}'s stdout line"
        );
        assert!(
            all.contains(&format!("s{i} | err s{i}\n")),
            "s{i}'s stderr line"
        );
    }
    let head = kepler.logs("many.yaml", &["--head", "250"]);
    assert_eq!(head.lines().count(), 250);
    assert!(
        all.starts_with(&head),
        "the head is where the whole log starts"
    );

    let mut follower = kepler
        .command("kepler")
        .args(["-f", "many.yaml", "logs", "--follow", "--tail", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let backlog: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(2 * COUNT)
        .collect();
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(
        backlog.len(),
        2 * COUNT,
        "the follow's backlog holds every line"
    );
    assert_eq!(backlog.join("\n") + "\n", all, "in the order `logs` gives");

    stop_many(&kepler, &marker);
}

/// What `/proc/<pid>/autogroup` says of the niceness of the session's
/// scheduling group, if the kernel groups sessions.
fn session_niceness(pid: i32) -> Option<i32> {
    let enabled = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").ok()?;
    if enabled.trim() != "1" {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/autogroup")).ok()?;
    text.trim().rsplit_once("nice ")?.1.parse().ok()
}

/// A daemon started at niceness 3 in a session of its own runs ten levels
/// ahead, every thread (but the cgroup removal thread, which yields on
/// purpose) and its session; its services and their hooks keep niceness 3
/// and sessions at the kernel's default, as if the daemon had not moved.
#[test]
fn the_daemon_runs_ahead_of_its_services_which_keep_its_starting_niceness() {
    let mut kepler = Kepler::new();
    kepler.start_daemon_with(|command: &mut Command| unsafe {
        // SAFETY: setsid and setpriority are async-signal-safe.
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::setpriority(libc::PRIO_PROCESS, 0, 3) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    });
    let daemon = kepler.daemon_pid().unwrap();
    for task in std::fs::read_dir(format!("/proc/{daemon}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread of the blocking pool may end meanwhile.
        let (Ok(name), Some(nice)) = (
            std::fs::read_to_string(task.join("comm")),
            niceness_at(&task),
        ) else {
            continue;
        };
        if name.trim() == "kepler-cgroup-r" {
            assert_eq!(nice, 10, "the removal thread yields");
        } else {
            assert_eq!(nice, -7, "daemon thread {}", name.trim());
        }
    }
    let status = daemon_status(&kepler);
    assert!(
        status.contains("priority:    niceness -7, services 3;"),
        "{status}"
    );

    let marker = marker(9);
    kepler.write(
        "nice.yaml",
        &format!(
            "services:\n  app:\n    command: [sleep, \"{marker}\"]\n    hooks:\n      \
             pre_start:\n        run: cut -d ')' -f 2 /proc/self/stat | cut -d ' ' -f 18 > hook-nice\n"
        ),
    );
    kepler
        .kepler(&["-f", "nice.yaml", "start", "-d", "--wait"])
        .success();
    let service = kepler.ps("nice.yaml")["app"].pid().unwrap();
    assert_eq!(niceness(service), 3);
    let hook = std::fs::read_to_string(kepler.dir().join("hook-nice")).unwrap();
    assert_eq!(hook.trim(), "3", "the hook's niceness");

    match (session_niceness(daemon), session_niceness(service)) {
        (Some(daemon_session), Some(service_session)) => {
            assert_eq!(daemon_session, -7, "{status}");
            assert_eq!(service_session, 0, "a service's session starts afresh");
            assert!(status.contains("session -7"), "{status}");
        }
        _ => eprintln!(
            "SKIP: session niceness not checked: this kernel does not group sessions \
             (kernel.sched_autogroup_enabled is not 1)"
        ),
    }
    kepler.kepler(&["-f", "nice.yaml", "stop"]).success();
}
