//! `limits:` reach the service, and the daemon's raised open-file limit
//! does not.
//!
//! One test owns the process-wide NOFILE limit: it lowers the soft limit,
//! then calls `raise_fd_limit` the way the daemon does at start.

mod process_support;

use std::time::Duration;

use kepler_daemon::process::{
    original_fd_limit, raise_fd_limit, spawn, stop_group, ResourceLimits, SpawnError,
};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use process_support::{proc_limit, spec, within, KillOnDrop};

async fn stop(pid: i32) {
    within(
        "stop",
        stop_group(pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
}

#[tokio::test]
async fn configured_limits_are_set_as_soft_and_hard() {
    let mut limited = spec(&["sleep", "1000"]);
    limited.limits = ResourceLimits {
        memory_bytes: Some(512 * 1024 * 1024),
        cpu_time_secs: Some(120),
        max_fds: Some(256),
    };
    let spawned = spawn(&limited).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let pid = spawned.pid;
    let both = |v: &str| (v.to_owned(), v.to_owned());
    assert_eq!(proc_limit(pid, "Max address space"), both("536870912"));
    assert_eq!(proc_limit(pid, "Max cpu time"), both("120"));
    assert_eq!(proc_limit(pid, "Max open files"), both("256"));
    stop(pid).await;
}

#[tokio::test]
async fn daemon_fd_limit_is_raised_but_services_get_the_original_back() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // Make the raise observable even where soft == hard already.
    let start_soft = if soft < hard {
        soft
    } else {
        (hard / 2).max(64).min(hard)
    };
    setrlimit(Resource::RLIMIT_NOFILE, start_soft, hard).expect("lower soft limit");

    let raised = raise_fd_limit().expect("raise");
    // Up to fs.nr_open where this root may raise hard limits, else to the
    // hard limit, with the reason.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    match &raised.short_of_nr_open {
        None => assert_eq!(raised.limit, nr_open),
        Some(why) => {
            assert_eq!(raised.limit, hard);
            assert!(why.contains("fs.nr_open"), "{why}");
        }
    }
    let limit = raised.limit;
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (limit, limit));
    assert_eq!(raised.original, start_soft);
    assert_eq!(original_fd_limit(), Some(start_soft));

    let spawned = spawn(&spec(&["sleep", "1000"])).expect("spawn");

    let _cleanup = KillOnDrop(spawned.pid);
    assert_eq!(
        proc_limit(spawned.pid, "Max open files"),
        (start_soft.to_string(), hard.to_string())
    );
    stop(spawned.pid).await;
}

#[tokio::test]
async fn limit_the_kernel_refuses_is_a_spawn_error_naming_it() {
    let mut greedy = spec(&["true"]);
    // Above /proc/sys/fs/nr_open: EPERM even for root.
    greedy.limits.max_fds = Some(1 << 40);
    let err = spawn(&greedy).expect_err("must fail");
    assert!(matches!(err, SpawnError::Limit { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("limits.max_fds = 1099511627776")
            && message.contains("Operation not permitted"),
        "{message}"
    );
}

#[tokio::test]
async fn cpu_time_limit_is_enforced() {
    let mut spinner = spec(&["sh", "-c", "while :; do :; done"]);
    spinner.limits.cpu_time_secs = Some(1);
    let spawned = spawn(&spinner).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let status = within("the kernel to kill the spinner", spawned.exit).await;
    assert_eq!(status.signal, Some(libc::SIGKILL), "{status}");
}
