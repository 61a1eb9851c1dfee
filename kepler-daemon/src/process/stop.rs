//! Stopping a service: signal its whole process group, give it a grace
//! period, then SIGKILL whatever is left. A stop always ends.
//!
//! "Stopped" means the group is gone, not that the leader exited: a shell's
//! background jobs or a server's workers count too. Waiting is driven by the
//! reaper's notifications ([`wait_group_gone`]); the only timers are the
//! grace period and a bound on how long SIGKILLed processes may linger.
//!
//! Callers must not signal a group after they have seen it gone: its number
//! may then be reused by an unrelated process.

use std::io;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::reaper::{group_is_gone, wait_group_gone};

/// How long SIGKILLed processes may take to disappear before
/// [`stop_group`] gives up on them. Only processes stuck in the kernel
/// (uninterruptible sleep) or zombies held by a non-reaping parent outlast it.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The group had already gone when the stop began.
    AlreadyGone,
    /// The group was gone within the grace period after the stop signal.
    Graceful,
    /// The grace period ran out; the group was SIGKILLed and is gone.
    Killed,
    /// Even [`KILL_TIMEOUT`] after SIGKILL some process of the group is left.
    /// It will still be reaped whenever it finally dies.
    Unkillable,
}

impl StopOutcome {
    /// Whether SIGKILL had to be sent.
    pub fn needed_sigkill(self) -> bool {
        matches!(self, StopOutcome::Killed | StopOutcome::Unkillable)
    }
}

/// Sends `signal` to every process of group `pgid`. A group that no longer
/// exists (ESRCH) is not an error.
pub fn signal_group(pgid: i32, signal: Signal) -> io::Result<()> {
    if pgid <= 1 {
        // kill(-1) would signal every process on the machine.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    match kill(Pid::from_raw(-pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Sends `signal` to group `pgid`, waits up to `grace` for the group to be
/// gone, then SIGKILLs the group and waits until it is gone (bounded by
/// [`KILL_TIMEOUT`]).
///
/// Stopped (SIGSTOP) members are sent SIGCONT after the signal so they can
/// act on it, as systemd does.
pub async fn stop_group(pgid: i32, signal: Signal, grace: Duration) -> StopOutcome {
    if pgid <= 1 || group_is_gone(pgid) {
        return StopOutcome::AlreadyGone;
    }
    if signal != Signal::SIGKILL {
        if let Err(err) = signal_group(pgid, signal) {
            tracing::warn!(pgid, %signal, %err, "cannot send stop signal; killing instead");
        } else {
            if signal != Signal::SIGCONT {
                let _ = signal_group(pgid, Signal::SIGCONT);
            }
            if tokio::time::timeout(grace, wait_group_gone(pgid))
                .await
                .is_ok()
            {
                return StopOutcome::Graceful;
            }
        }
    }
    kill_group(pgid).await
}

/// For a leader that exited on its own while its group lives on: SIGKILL
/// what is left and wait until it is gone, as a container runtime tears
/// down a container whose PID 1 exited. A service counts as finished only
/// after this returns.
///
/// ```ignore
/// let status = spawned.exit.await;
/// reap_leftovers(spawned.pid).await;
/// // now record `status` as the service's exit
/// ```
pub async fn reap_leftovers(pgid: i32) -> StopOutcome {
    if pgid <= 1 || group_is_gone(pgid) {
        return StopOutcome::AlreadyGone;
    }
    kill_group(pgid).await
}

async fn kill_group(pgid: i32) -> StopOutcome {
    if let Err(err) = signal_group(pgid, Signal::SIGKILL) {
        tracing::error!(pgid, %err, "cannot SIGKILL process group");
    }
    match tokio::time::timeout(KILL_TIMEOUT, wait_group_gone(pgid)).await {
        Ok(()) => StopOutcome::Killed,
        Err(_) => {
            tracing::error!(pgid, "processes of the group survived SIGKILL");
            StopOutcome::Unkillable
        }
    }
}
