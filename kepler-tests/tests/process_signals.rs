//! Signal state a service starts with, and signal names.
//!
//! The daemon blocks and ignores signals for its own reasons; a child
//! inherits both across `exec` unless spawn resets them. This file's first
//! test reproduces that on its own thread (mask) and process (SIG_IGN).

mod process_support;

use std::time::Duration;

use kepler_daemon::process::{parse_signal, signal_name, spawn, stop_group, StopOutcome};
use nix::sys::signal::{pthread_sigmask, signal, SigHandler, SigSet, SigmaskHow, Signal};
use process_support::{proc_status, read_until_line, shell, spec, within, KillOnDrop};
use tokio::io::BufReader;

#[tokio::test]
async fn service_gets_sigterm_although_the_daemon_blocks_and_ignores_signals() {
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGUSR2);
    // tokio::test runs on this thread, so spawn forks with this mask.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).expect("block");
    // SAFETY: installing SIG_IGN involves no handler code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }.expect("ignore SIGINT");
    // SAFETY: as above.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }.expect("ignore SIGHUP");

    // Nothing blocked or ignored survives into the service.
    let sleeper = spawn(&spec(&["sleep", "1000"])).expect("spawn");
    let _cleanup = KillOnDrop(sleeper.pid);
    assert_eq!(proc_status(sleeper.pid, "SigBlk"), "0000000000000000");
    assert_eq!(proc_status(sleeper.pid, "SigIgn"), "0000000000000000");
    within(
        "stop sleeper",
        stop_group(sleeper.pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;

    // And a shell trap runs on stop.
    let mut spawned = spawn(&shell(
        r#"trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.1; done"#,
    ))
    .expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let mut stdout = BufReader::new(spawned.stdout.take().unwrap());
    read_until_line(&mut stdout, "ready").await;
    let outcome = within(
        "stop",
        stop_group(spawned.pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Graceful, "the trap must end it");
    read_until_line(&mut stdout, "got-term").await;
    assert!(within("exit", spawned.exit).await.success());
}

#[test]
fn signals_parse_by_name_short_name_and_number() {
    for spelling in ["SIGTERM", "TERM", "term", "SigTerm", "15", " 15 "] {
        assert_eq!(parse_signal(spelling), Ok(Signal::SIGTERM), "{spelling}");
    }
    assert_eq!(parse_signal("KILL"), Ok(Signal::SIGKILL));
    assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
    let err = parse_signal("SIGNOPE").expect_err("unknown");
    assert!(
        err.to_string().contains("unknown signal `SIGNOPE`"),
        "{err}"
    );
    assert!(parse_signal("0").is_err());
    assert!(parse_signal("99").is_err());
}

#[test]
fn signal_names_print_like_kill_l() {
    assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
    assert_eq!(signal_name(35), "signal 35");
}
