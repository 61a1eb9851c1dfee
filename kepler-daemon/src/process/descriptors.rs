//! The daemon's descriptor budget: a reserve that spawns may not eat into.
//!
//! Services cost the daemon descriptors (output pipes while they run, a few
//! more for a moment while they spawn). Were spawns allowed to take the
//! last ones, the daemon could no longer accept a connection, open a log
//! segment or write its state. So a spawn first checks that the descriptor
//! table is filled below `limit - reserve`, and otherwise fails with a
//! message naming the limit to raise ([`Shortage`]).
//!
//! Counting the open descriptors costs one directory entry per descriptor
//! (`/proc/self/fd`), too much for every spawn of ten thousand. A spawn
//! leaves the daemon at most [`SPAWN_KEEPS`] more than before, so the count
//! is estimated from the last one measured plus that much per spawn since,
//! and measured again only when the estimate comes near the limit: once per
//! several thousand spawns on a roomy daemon, every spawn on one at its
//! limit (where a spawn failing matters more than its cost).
//!
//! Where descriptors sit matters too: a child copies the daemon's table up
//! to the descriptors it needs (see [`super::launch`]), and those are the
//! lowest free numbers. So what the daemon keeps for as long as a service
//! runs is renumbered high ([`keep_high`]), and a spawn copies the few
//! low ones whatever the number of services.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::sys::resource::{getrlimit, Resource};

use super::limits::RaisedFdLimit;

/// Descriptors a spawn may hold at once (stdin, two pipes, cgroup.procs,
/// the exec-error pipe), with room to spare.
const SPAWN_NEEDS: u64 = 8;

/// Descriptors a spawn may leave open: the read ends of its output pipes,
/// and the service's log file once it writes.
const SPAWN_KEEPS: u64 = 3;

/// How the limit was raised at start, for [`describe`].
struct Raised {
    raised: Option<RaisedFdLimit>,
    /// Why the limit could not be raised at all, if so.
    raise_error: Option<String>,
}

static RAISED: OnceLock<Raised> = OnceLock::new();

/// The estimate [`check_spawn`] keeps.
struct Estimate {
    /// Descriptors open when last counted.
    counted: u64,
    /// Spawns let through since.
    spawns: u64,
}

static ESTIMATE: Mutex<Estimate> = Mutex::new(Estimate {
    counted: 0,
    spawns: 0,
});

/// Records how [`super::raise_fd_limit`] went, for [`describe`], and counts
/// the descriptors open at start.
pub fn init(raised: Result<RaisedFdLimit, String>) {
    if let Some(counted) = open_now() {
        *ESTIMATE.lock().unwrap_or_else(PoisonError::into_inner) = Estimate { counted, spawns: 0 };
    }
    let (raised, raise_error) = match raised {
        Ok(raised) => (Some(raised), None),
        Err(e) => (None, Some(e)),
    };
    let _ = RAISED.set(Raised {
        raised,
        raise_error,
    });
}

/// The soft `RLIMIT_NOFILE` in force now.
fn current_limit() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Descriptors kept for connections, log files and state writes: a
/// sixteenth of the limit, at least 32 and at most 1024.
pub fn reserve(limit: u64) -> u64 {
    (limit / 16).clamp(32, 1024)
}

/// The daemon is too short of descriptors to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub open: Option<u64>,
    pub limit: u64,
    pub reserve: u64,
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = match self.open {
            Some(open) => format!("{open} of its {} open", self.limit),
            None => format!("all {} open", self.limit),
        };
        write!(
            f,
            "the daemon is out of file descriptors ({open}, the last {} kept for connections, \
             logs and state); raise the daemon's open-file limit (RLIMIT_NOFILE: LimitNOFILE= in \
             its systemd unit, or `ulimit -Hn` where it is started; the kernel's ceiling is \
             /proc/sys/fs/nr_open), or run fewer services",
            self.reserve
        )
    }
}

/// Whether a spawn may take descriptors now without eating into the
/// reserve.
pub fn check_spawn() -> Result<(), Shortage> {
    let limit = current_limit();
    let reserve = reserve(limit);
    let fits = |open: u64| open + SPAWN_NEEDS + reserve <= limit;
    let mut estimate = ESTIMATE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut open = estimate.counted + estimate.spawns * SPAWN_KEEPS;
    if !fits(open) {
        // Near the limit by the estimate: count, services may have stopped.
        let Some(counted) = open_now() else {
            return Err(Shortage {
                open: None,
                limit,
                reserve,
            });
        };
        *estimate = Estimate { counted, spawns: 0 };
        open = counted;
    }
    if !fits(open) {
        return Err(Shortage {
            open: Some(open),
            limit,
            reserve,
        });
    }
    estimate.spawns += 1;
    Ok(())
}

/// The open-file limit for `kepler daemon status` and the start-up log.
pub fn describe() -> String {
    let limit = current_limit();
    let mut text = format!("limit {limit}, {} kept in reserve", reserve(limit));
    if let Some(open) = open_now() {
        text = format!("{open} open, {text}");
    }
    let Some(budget) = RAISED.get() else {
        return text;
    };
    if let Some(raised) = &budget.raised {
        text.push_str(&format!(
            "; services get {} unless they set limits.max_fds",
            raised.original
        ));
        if let Some(why) = &raised.short_of_nr_open {
            text.push_str(&format!("; {why}"));
        }
    }
    if let Some(why) = &budget.raise_error {
        text.push_str(&format!("; cannot raise the limit: {why}"));
    }
    text
}

/// Descriptors open now (one directory entry each), not counting the one
/// that reads the directory.
fn open_now() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| entries.count().saturating_sub(1) as u64)
}

/// Where descriptors kept while a service runs are numbered from (at most
/// half the limit).
const KEPT_FROM: u64 = 1024;

/// Renumbers a descriptor the daemon keeps while a service runs (an output
/// pipe, a log file) to [`KEPT_FROM`] or above, so the low numbers stay
/// for what a spawn hands its child: the child then copies the table only
/// up to those (see [`super::launch`]), however many services run. Where
/// that cannot be done, the descriptor stays as it is.
pub fn keep_high(fd: OwnedFd) -> OwnedFd {
    let from = KEPT_FROM.min(current_limit() / 2);
    if fd.as_raw_fd() as u64 >= from {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor and touches no memory.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, from as libc::c_int) };
    if moved < 0 {
        return fd;
    }
    // SAFETY: `moved` was just made and is owned by nobody else.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(moved) }
}
