//! The processes one spawn may grow into, and how to end them all.
//!
//! A [`Scope`] is a process group (the leader's pid) or, in cgroup mode, a
//! cgroup (see [`crate::containment`]). Both are stopped the same way:
//! signal every member, a grace period, then SIGKILL what is left. "Gone"
//! means no member is left and the leader has been reaped, so its pid is
//! never signalled again after that. A cgroup is removed (by the removal
//! thread, after the stop) once it is gone.
//!
//! The difference is what counts as a member. A process that calls
//! `setsid` or `setpgid` leaves its process group, but not its cgroup, so
//! only the cgroup contains double-forked daemons.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::reaper::{group_is_gone, wait_group_gone};
use super::stop::{reap_leftovers, signal_group, stop_group, StopOutcome, KILL_TIMEOUT};
use crate::containment::{self, Cgroup, MemberList};

#[derive(Debug, Clone)]
pub enum Scope {
    /// The process group led by this pid.
    Group(i32),
    /// Everything in `cgroup`; `leader` is the process that was spawned.
    Cgroup { leader: i32, cgroup: Arc<Cgroup> },
}

impl Scope {
    /// The spawned process's pid (also its process group id).
    pub fn leader(&self) -> i32 {
        match self {
            Scope::Group(pgid) => *pgid,
            Scope::Cgroup { leader, .. } => *leader,
        }
    }

    pub fn cgroup(&self) -> Option<&Arc<Cgroup>> {
        match self {
            Scope::Group(_) => None,
            Scope::Cgroup { cgroup, .. } => Some(cgroup),
        }
    }

    /// No member left, and the leader reaped.
    pub fn is_gone(&self) -> bool {
        match self {
            Scope::Group(pgid) => *pgid <= 1 || group_is_gone(*pgid),
            Scope::Cgroup { leader, cgroup } => {
                let empty = match cgroup.member_list() {
                    Ok(Some(members)) => members.is_empty(),
                    Ok(None) => true,
                    Err(_) => !cgroup.is_populated(),
                };
                empty && group_is_gone(*leader)
            }
        }
    }

    /// Resolves once [`Self::is_gone`]: from `cgroup.events` through
    /// inotify, then the reaper's notice for the leader. An empty cgroup is
    /// removed on the way.
    pub async fn wait_gone(&self) {
        match self {
            Scope::Group(pgid) => wait_group_gone(*pgid).await,
            Scope::Cgroup { leader, cgroup } => match cgroup.member_list() {
                Ok(Some(members)) => cgroup_gone(*leader, cgroup, &members).await,
                // Removed already, or unreadable: only the leader is left to
                // wait for.
                _ => wait_group_gone(*leader).await,
            },
        }
    }

    /// Sends `signal` to every member, waits up to `grace` for them all to
    /// be gone, then SIGKILLs what is left and waits (bounded by
    /// [`KILL_TIMEOUT`]). Stopped members get SIGCONT so they can act on
    /// the signal.
    pub async fn stop(&self, signal: Signal, grace: Duration) -> StopOutcome {
        let Scope::Cgroup { leader, cgroup } = self else {
            return stop_group(self.leader(), signal, grace).await;
        };
        // One open `cgroup.procs` serves the signal and the wait.
        let members = match cgroup.member_list() {
            Ok(Some(members)) => members,
            Ok(None) if group_is_gone(*leader) => return StopOutcome::AlreadyGone,
            Ok(None) => return self.kill_and_wait().await,
            Err(err) => {
                // Out of descriptors, say: the process group needs none.
                tracing::warn!(
                    leader,
                    cgroup = %cgroup.dir().display(),
                    %err,
                    "cannot list the cgroup's members; stopping the process group instead"
                );
                let outcome = stop_group(*leader, signal, grace).await;
                containment::remove_when_empty(cgroup);
                return outcome;
            }
        };
        if signal == Signal::SIGKILL {
            if members.is_empty() && group_is_gone(*leader) {
                self.remove_cgroup();
                return StopOutcome::AlreadyGone;
            }
        } else {
            match members.signal_scope(*leader, signal) {
                Ok(signalled) if signalled.nobody() && group_is_gone(*leader) => {
                    self.remove_cgroup();
                    return StopOutcome::AlreadyGone;
                }
                Err(err) => tracing::warn!(
                    leader,
                    cgroup = %cgroup.dir().display(),
                    %signal,
                    %err,
                    "cannot send the stop signal; killing instead"
                ),
                Ok(signalled) => {
                    if signal != Signal::SIGCONT {
                        if signalled.group {
                            let _ = signal_group(*leader, Signal::SIGCONT);
                        }
                        for pid in signalled.outside {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                        }
                    }
                    let gone = cgroup_gone(*leader, cgroup, &members);
                    if tokio::time::timeout(grace, gone).await.is_ok() {
                        return StopOutcome::Graceful;
                    }
                }
            }
        }
        self.kill_and_wait().await
    }

    /// After the leader exited on its own: SIGKILL whatever is left of the
    /// scope and wait until it is gone (see [`reap_leftovers`]).
    pub async fn reap_leftovers(&self) -> StopOutcome {
        if let Scope::Group(pgid) = self {
            return reap_leftovers(*pgid).await;
        }
        if self.is_gone() {
            self.remove_cgroup();
            return StopOutcome::AlreadyGone;
        }
        self.kill_and_wait().await
    }

    /// SIGKILLs every member now, without waiting: for a guard whose owner
    /// was cancelled. A cgroup is removed once empty.
    pub fn kill_now(&self) {
        match self {
            Scope::Group(pgid) => {
                if let Err(err) = signal_group(*pgid, Signal::SIGKILL) {
                    tracing::error!(pgid, %err, "cannot kill a process group");
                }
            }
            Scope::Cgroup { cgroup, .. } => {
                if let Err(err) = cgroup.kill_all() {
                    tracing::error!(cgroup = %cgroup.dir().display(), %err, "cannot kill a cgroup");
                }
                containment::remove_when_empty(cgroup);
            }
        }
    }

    /// How many times the OOM killer struck inside the scope (cgroups with
    /// the memory controller only).
    pub fn oom_kills(&self) -> u64 {
        // Asked on every exit: where services get no memory controller
        // there is no `memory.events` to look up.
        let memory = containment::current().has(containment::Controller::Memory);
        match self.cgroup() {
            Some(cgroup) if memory => cgroup.oom_kills(),
            _ => 0,
        }
    }

    async fn kill_and_wait(&self) -> StopOutcome {
        let Scope::Cgroup { cgroup, .. } = self else {
            return reap_leftovers(self.leader()).await;
        };
        if let Err(err) = cgroup.kill_all() {
            tracing::error!(
                cgroup = %cgroup.dir().display(),
                %err,
                "cannot kill a cgroup; killing the process group instead"
            );
            if let Err(err) = signal_group(self.leader(), Signal::SIGKILL) {
                tracing::error!(pgid = self.leader(), %err, "cannot kill a process group");
            }
        }
        match tokio::time::timeout(KILL_TIMEOUT, self.wait_gone()).await {
            Ok(()) => {
                self.remove_cgroup();
                StopOutcome::Killed
            }
            Err(_) => {
                tracing::error!(
                    cgroup = %cgroup.dir().display(),
                    "processes of the cgroup survived SIGKILL"
                );
                containment::remove_when_empty(cgroup);
                StopOutcome::Unkillable
            }
        }
    }

    /// Hands the cgroup (once gone) to the removal thread: the stop is over
    /// without waiting for the kernel's cgroup lock.
    fn remove_cgroup(&self) {
        if let Some(cgroup) = self.cgroup() {
            cgroup.remove_later();
        }
    }
}

/// The cgroup has no member (and goes to be removed), and its leader is
/// reaped.
///
/// The leader first: the reaper hears of its exit at once, while
/// `cgroup.events` changes reach inotify through a kernel work queue, and a
/// process leaves `cgroup.procs` when it exits, before it is reaped. So for
/// the usual service, whose processes all go with the leader, the cgroup is
/// found empty without waiting for inotify; the watch is for what outlives
/// the leader.
async fn cgroup_gone(leader: i32, cgroup: &Cgroup, members: &MemberList<'_>) {
    wait_group_gone(leader).await;
    containment::wait_no_members(cgroup, members).await;
    cgroup.remove_later();
}
