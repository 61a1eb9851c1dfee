//! Resource limits: the daemon's own open-file limit and the `limits:` a
//! service asks for.
//!
//! The daemon holds output pipes for every service, so at start it raises
//! its `RLIMIT_NOFILE` as far as the kernel allows ([`raise_fd_limit`]). Children must not
//! inherit that raised value silently: unless a service sets `max_fds`, it
//! gets the soft limit the daemon itself was started with, as if the daemon
//! had never touched it.

use std::io;
use std::sync::OnceLock;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Limits from a service's `limits:` block. Each one is applied as both the
/// soft and the hard limit, so the service cannot lift it (as systemd's
/// `Limit*=` does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_AS`, in bytes.
    pub memory_bytes: Option<u64>,
    /// `RLIMIT_CPU`, in seconds; the kernel SIGKILLs the process when reached.
    pub cpu_time_secs: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub max_fds: Option<u64>,
}

/// `(soft, hard)` NOFILE limits the daemon had before [`raise_fd_limit`].
static ORIGINAL_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// The kernel's ceiling for `RLIMIT_NOFILE`.
const NR_OPEN: &str = "/proc/sys/fs/nr_open";

/// What [`raise_fd_limit`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedFdLimit {
    /// The soft (and hard) limit now in force.
    pub limit: u64,
    /// The soft limit the daemon was started with.
    pub original: u64,
    /// Why the limit is below `fs.nr_open`, when it is.
    pub short_of_nr_open: Option<String>,
}

/// Raises the daemon's open-file limit, soft and hard, to `fs.nr_open` (or
/// as far as it may: without `CAP_SYS_RESOURCE`, to its hard limit) and
/// remembers the original for children. Calling it again is harmless: the
/// first original is kept.
pub fn raise_fd_limit() -> io::Result<RaisedFdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let &(original, _) = ORIGINAL_NOFILE.get_or_init(|| (soft, hard));
    let nr_open = std::fs::read_to_string(NR_OPEN)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let mut short_of_nr_open = None;
    if let Some(nr_open) = nr_open.filter(|&n| n > hard || n > soft) {
        match setrlimit(Resource::RLIMIT_NOFILE, nr_open, nr_open) {
            Ok(()) => {}
            Err(e) => {
                short_of_nr_open = Some(format!(
                    "cannot raise it to fs.nr_open = {nr_open}: {e}; kept the hard limit"
                ));
                if soft < hard {
                    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
                }
            }
        }
    } else if nr_open.is_none() {
        short_of_nr_open = Some(format!("cannot read {NR_OPEN}; kept the hard limit"));
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
    }
    let (limit, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(RaisedFdLimit {
        limit,
        original,
        short_of_nr_open,
    })
}

/// The `(soft, hard)` NOFILE limits the daemon started with, if
/// [`raise_fd_limit`] ran.
pub fn original_nofile() -> Option<(u64, u64)> {
    ORIGINAL_NOFILE.get().copied()
}

/// The soft NOFILE limit the daemon started with, if [`raise_fd_limit`] ran.
pub fn original_fd_limit() -> Option<u64> {
    ORIGINAL_NOFILE.get().map(|&(soft, _)| soft)
}

/// Which limit a setting applies; used to word errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Memory,
    CpuTime,
    MaxFds,
}

impl LimitKind {
    /// The config key a person would edit.
    pub fn config_key(self) -> &'static str {
        match self {
            LimitKind::Memory => "limits.memory",
            LimitKind::CpuTime => "limits.cpu_time",
            LimitKind::MaxFds => "limits.max_fds",
        }
    }
}

/// One `setrlimit` call, computed before fork so the child only makes the
/// syscall.
#[derive(Debug, Clone, Copy)]
pub(super) struct LimitSetting {
    pub kind: LimitKind,
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

/// The `setrlimit` calls a child must make, in order.
pub(super) fn plan(limits: &ResourceLimits) -> Vec<LimitSetting> {
    let mut plan = Vec::with_capacity(3);
    if let Some(bytes) = limits.memory_bytes {
        plan.push(LimitSetting {
            kind: LimitKind::Memory,
            resource: Resource::RLIMIT_AS,
            soft: bytes,
            hard: bytes,
        });
    }
    if let Some(secs) = limits.cpu_time_secs {
        plan.push(LimitSetting {
            kind: LimitKind::CpuTime,
            resource: Resource::RLIMIT_CPU,
            soft: secs,
            hard: secs,
        });
    }
    let nofile = match (limits.max_fds, ORIGINAL_NOFILE.get()) {
        (Some(fds), _) => Some((fds, fds)),
        // Give back what the daemon was started with, keeping the hard limit.
        (None, Some(&original)) => Some(original),
        (None, None) => None,
    };
    if let Some((soft, hard)) = nofile {
        plan.push(LimitSetting {
            kind: LimitKind::MaxFds,
            resource: Resource::RLIMIT_NOFILE,
            soft,
            hard,
        });
    }
    plan
}
