//! A service process from spawn to stop: exit statuses, spawn errors, the
//! exact environment, output pipes, and stops that leave nothing behind.

mod process_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kepler_daemon::process::{
    become_subreaper, reap_leftovers, spawn, stop_group, OutputMode, SpawnError, StopOutcome,
};
use nix::sys::signal::Signal;
use process_support::{
    group_exists, process_exists, read_to_end, read_until_line, shell, spec, within, KillOnDrop,
};
use tokio::io::BufReader;

#[tokio::test]
async fn exit_code_is_recorded() {
    let spawned = spawn(&shell("exit 3")).expect("spawn");
    let status = within("exit", spawned.exit).await;
    assert_eq!(status.code, Some(3));
    assert_eq!(status.signal, None);
    assert!(!status.success());
}

#[tokio::test]
async fn killing_signal_is_recorded_including_realtime_signals() {
    let spawned = spawn(&shell("kill -USR1 $$")).expect("spawn");
    let status = within("exit", spawned.exit).await;
    assert_eq!(status.signal, Some(libc::SIGUSR1));
    assert_eq!(status.code, None);
    assert_eq!(status.to_string(), "killed by SIGUSR1");

    // Realtime signals have no nix `Signal`; the raw number must survive.
    let spawned = spawn(&shell("kill -35 $$")).expect("spawn");
    assert_eq!(within("exit", spawned.exit).await.signal, Some(35));
}

#[tokio::test]
async fn missing_binary_is_a_spawn_error_naming_it() {
    let err = spawn(&spec(&["no-such-program-kepler"])).expect_err("must fail");
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("cannot start `no-such-program-kepler`")
            && message.contains("not found in the service's PATH"),
        "{message}"
    );

    let err = spawn(&spec(&["/nonexistent/bin/app"])).expect_err("must fail");
    assert!(err.to_string().contains("`/nonexistent/bin/app`"), "{err}");
}

#[tokio::test]
async fn bare_name_without_path_is_found_in_the_default_search_path() {
    let mut missing = spec(&["no-such-program-kepler"]);
    missing.env.clear();
    let err = spawn(&missing).expect_err("must fail");
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("set PATH"), "{err}");

    // `env` is found although the service has no PATH, and none is added.
    let mut printenv = spec(&["env"]);
    printenv.env = BTreeMap::from([("ONLY".to_owned(), "this".to_owned())]);
    let mut spawned = spawn(&printenv).expect("spawn");
    let out = read_to_end(spawned.stdout.take().unwrap()).await;
    assert_eq!(String::from_utf8(out).unwrap(), "ONLY=this\n");
    assert!(within("exit", spawned.exit).await.success());
}

#[tokio::test]
async fn bad_working_dir_is_a_spawn_error_naming_the_directory() {
    let mut bad = spec(&["true"]);
    bad.working_dir = PathBuf::from("/nonexistent/kepler-dir");
    let err = spawn(&bad).expect_err("must fail");
    assert!(matches!(err, SpawnError::WorkingDir { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("working_dir `/nonexistent/kepler-dir`")
            && message.contains("No such file or directory"),
        "{message}"
    );
}

#[tokio::test]
async fn environment_is_exactly_the_spec() {
    let mut printenv = spec(&["env"]);
    printenv.env.insert("GREETING".into(), "hello world".into());
    printenv.env.insert("EMPTY".into(), String::new());
    let mut spawned = spawn(&printenv).expect("spawn");
    let out = read_to_end(spawned.stdout.take().unwrap()).await;
    let mut lines: Vec<_> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        ["EMPTY=", "GREETING=hello world", "PATH=/usr/bin:/bin"]
    );
    assert!(within("exit", spawned.exit).await.success());
}

#[tokio::test]
async fn working_dir_is_applied() {
    let mut pwd = spec(&["pwd"]);
    pwd.working_dir = PathBuf::from("/tmp");
    let mut spawned = spawn(&pwd).expect("spawn");
    assert_eq!(read_to_end(spawned.stdout.take().unwrap()).await, b"/tmp\n");
    within("exit", spawned.exit).await;
}

#[tokio::test]
async fn stdout_and_stderr_arrive_on_separate_pipes() {
    let mut spawned = spawn(&shell("echo to-out; echo to-err >&2")).expect("spawn");
    let stdout = read_to_end(spawned.stdout.take().unwrap());
    let stderr = read_to_end(spawned.stderr.take().unwrap());
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    assert_eq!(stdout, b"to-out\n");
    assert_eq!(stderr, b"to-err\n");
    assert!(within("exit", spawned.exit).await.success());
}

#[tokio::test]
async fn null_output_gives_no_pipes_and_stdin_is_empty() {
    let mut quiet = shell("cat; echo done");
    quiet.stderr = OutputMode::Null;
    let mut spawned = spawn(&quiet).expect("spawn");
    assert!(spawned.stderr.is_none());
    // `cat` reads /dev/null, so it ends at once.
    assert_eq!(read_to_end(spawned.stdout.take().unwrap()).await, b"done\n");
    assert!(within("exit", spawned.exit).await.success());
}

#[tokio::test]
async fn chatty_child_does_not_block_while_its_pipe_is_drained() {
    const SIZE: usize = 10 * 1024 * 1024;
    let mut spawned =
        spawn(&shell(&format!("head -c {SIZE} /dev/zero; echo tail >&2"))).expect("spawn");
    let stdout = read_to_end(spawned.stdout.take().unwrap());
    let stderr = read_to_end(spawned.stderr.take().unwrap());
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    assert_eq!(stdout.len(), SIZE);
    assert_eq!(stderr, b"tail\n");
    assert!(within("exit", spawned.exit).await.success());
}

#[tokio::test]
async fn stop_with_sigterm_ends_the_group_gracefully() {
    let spawned = spawn(&spec(&["sleep", "1000"])).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let outcome = within(
        "stop",
        stop_group(spawned.pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Graceful);
    let status = within("exit", spawned.exit).await;
    assert_eq!(status.signal, Some(libc::SIGTERM));
    assert!(!group_exists(spawned.pid));
}

#[tokio::test]
async fn child_ignoring_sigterm_is_sigkilled_after_the_grace_period() {
    let mut spawned = spawn(&shell(
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
    ))
    .expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let mut stdout = BufReader::new(spawned.stdout.take().unwrap());
    read_until_line(&mut stdout, "ready").await;

    let started = tokio::time::Instant::now();
    let outcome = within(
        "stop",
        stop_group(spawned.pid, Signal::SIGTERM, Duration::from_millis(300)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Killed);
    assert!(outcome.needed_sigkill());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        within("exit", spawned.exit).await.signal,
        Some(libc::SIGKILL)
    );
    assert!(
        !group_exists(spawned.pid),
        "nothing of the group may survive"
    );
}

#[tokio::test]
async fn background_grandchild_is_gone_after_stop() {
    become_subreaper().expect("subreaper");
    let mut spawned = spawn(&shell("sleep 1000 & echo $!; sleep 1000")).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let mut stdout = BufReader::new(spawned.stdout.take().unwrap());
    let mut line = String::new();
    within(
        "grandchild pid",
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
    )
    .await
    .expect("read");
    let grandchild: i32 = line.trim().parse().expect("pid");
    assert!(process_exists(grandchild));

    let outcome = within(
        "stop",
        stop_group(spawned.pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Graceful);
    assert!(!group_exists(spawned.pid));
    assert!(
        !process_exists(grandchild),
        "grandchild {grandchild} survived"
    );
    within("exit", spawned.exit).await;
}

#[tokio::test]
async fn leader_exiting_on_its_own_leaves_the_group_until_leftovers_are_reaped() {
    become_subreaper().expect("subreaper");
    let mut spawned = spawn(&shell("sleep 1000 & echo $!; exit 0")).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let mut stdout = BufReader::new(spawned.stdout.take().unwrap());
    let mut line = String::new();
    within(
        "grandchild pid",
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
    )
    .await
    .expect("read");
    let grandchild: i32 = line.trim().parse().expect("pid");

    let status = within("leader exit", spawned.exit).await;
    assert!(status.success());
    assert!(
        group_exists(spawned.pid),
        "the background sleep keeps the group"
    );

    let outcome = within("reap leftovers", reap_leftovers(spawned.pid)).await;
    assert_eq!(outcome, StopOutcome::Killed);
    assert!(!group_exists(spawned.pid));
    assert!(!process_exists(grandchild));

    // Once gone, there is nothing left to do.
    assert_eq!(reap_leftovers(spawned.pid).await, StopOutcome::AlreadyGone);
}

#[tokio::test]
async fn stopping_an_already_exited_service_reports_already_gone() {
    let spawned = spawn(&spec(&["true"])).expect("spawn");
    let pid = spawned.pid;
    within("exit", spawned.exit).await;
    within("group gone", kepler_daemon::process::wait_group_gone(pid)).await;
    assert_eq!(
        stop_group(pid, Signal::SIGTERM, Duration::from_secs(1)).await,
        StopOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn malformed_specs_are_rejected_before_forking() {
    assert!(matches!(spawn(&spec(&[])), Err(SpawnError::EmptyCommand)));

    let mut bad_env = spec(&["true"]);
    bad_env.env.insert("A=B".into(), "x".into());
    let err = spawn(&bad_env).expect_err("must fail");
    assert!(
        err.to_string()
            .contains("`A=B` is not a valid environment variable name"),
        "{err}"
    );

    let err = spawn(&spec(&["echo", "nul\0byte"])).expect_err("must fail");
    assert!(matches!(err, SpawnError::NulByte { .. }), "{err:?}");
}

/// std waits for a child whose exec failed; the reaper must never take that
/// child from it (std would panic), however busy reaping is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_spawns_racing_with_reaping_are_reported_not_panicked() {
    let tasks = (0..4).map(|_| {
        tokio::spawn(async {
            for _ in 0..100 {
                let mut ok = spec(&["true"]);
                ok.stdout = OutputMode::Null;
                ok.stderr = OutputMode::Null;
                let spawned = spawn(&ok).expect("spawn");
                let failed = spawn(&spec(&["/nonexistent/kepler-program"]));
                assert!(matches!(failed, Err(SpawnError::Exec { .. })));
                within("exit", spawned.exit).await;
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.expect("no spawn may panic");
    }
}
