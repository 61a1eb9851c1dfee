//! The new daemon's side of an upgrade: read the hand-over named by
//! `--resume`, take back the socket and the lock, and register the exit
//! waiters of the inherited children before anything could reap them.
//!
//! A body that cannot be read is not fatal: the socket and lock come from
//! the header, every other inherited descriptor is closed, and the configs
//! recover as after a crash (survivors stopped, wanted services started).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Duration;

use super::format::{self, Handover};
use super::Adoption;
use crate::process;
use crate::state_dir::InstanceLock;

/// What a resumed daemon starts from.
pub struct Resumed {
    pub listener: UnixListener,
    pub lock: InstanceLock,
    /// How long the daemon (this pid) has been up.
    pub daemon_up: Duration,
    /// The configs to adopt, by path; empty after a fallback.
    pub adoptions: HashMap<PathBuf, Adoption>,
    /// Welcomed client connections and the bytes read of their next request.
    pub connections: Vec<(OwnedFd, Vec<u8>)>,
    /// The metrics endpoint's socket (`--metrics-listen`), non-blocking.
    pub metrics_listener: Option<std::net::TcpListener>,
}

/// Reads the hand-over in `fd`. `Err` only when not even its header could be
/// read: then every inherited descriptor has been closed and the caller
/// starts as usual (a new socket, the lock taken again, crash recovery).
/// Call before any thread or child exists.
pub fn resume_args(fd: RawFd) -> Result<Resumed, String> {
    let (essentials, body) = match format::read_memfd(fd) {
        Ok(read) => read,
        Err(e) => {
            close_inherited(&[]);
            return Err(e.to_string());
        }
    };
    let keep_fds = [
        essentials.listener,
        essentials.lock_dir,
        essentials.pid_file,
    ];
    for fd in keep_fds {
        // SAFETY: borrowed only for the fcntl; ownership is taken below.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if let Err(e) = format::close_on_exec(&borrowed) {
            close_inherited(&[]);
            return Err(format!("descriptor {fd} from the hand-over: {e}"));
        }
    }
    // SAFETY: the previous daemon passed these for exactly these uses.
    let (listener, lock) = unsafe {
        (
            UnixListener::from_raw_fd(essentials.listener),
            InstanceLock::from_raw_fds(essentials.lock_dir, essentials.pid_file),
        )
    };
    let handover = match body {
        Ok(handover) => handover,
        Err(e) => {
            tracing::error!(
                "cannot resume from the hand-over ({e}); recovering as after a crash: \
                 processes of the previous daemon are stopped and wanted services started again"
            );
            close_inherited(&keep_fds);
            return Ok(Resumed {
                listener,
                lock,
                daemon_up: Duration::ZERO,
                adoptions: HashMap::new(),
                connections: Vec::new(),
                metrics_listener: None,
            });
        }
    };
    tracing::info!(
        from = handover.written_by,
        configs = handover.configs.len(),
        "resuming from the previous daemon's hand-over"
    );
    let daemon_up = Duration::from_millis(handover.daemon_up_ms);
    let connections = handover
        .connections
        .iter()
        .filter_map(|c| {
            // SAFETY: handed over for this connection alone, taken once.
            let fd = unsafe { OwnedFd::from_raw_fd(c.fd) };
            format::close_on_exec(&fd).ok()?;
            Some((fd, c.buffered.clone()))
        })
        .collect();
    let metrics_listener = handover
        .listeners
        .get(super::METRICS_LISTENER)
        .and_then(|&fd| {
            // SAFETY: handed over for this socket alone, taken once.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            format::close_on_exec(&listener).ok()?;
            listener.set_nonblocking(true).ok()?;
            Some(listener)
        });
    Ok(Resumed {
        listener,
        lock,
        daemon_up,
        adoptions: adopt(handover),
        connections,
        metrics_listener,
    })
}

/// Registers the exit waiters of every handed-over process, then starts
/// the reaper: a child that exited during the hand-over is a zombie and is
/// reaped now, its status going to its waiter.
fn adopt(handover: Handover) -> HashMap<PathBuf, Adoption> {
    let pids: Vec<i32> = handover
        .configs
        .iter()
        .flat_map(|c| c.services.values())
        .filter_map(|s| s.pid)
        .filter(|pid| *pid > 1)
        .collect();
    let waiters = process::adopt_children(&pids);
    let mut exits: HashMap<i32, _> = pids
        .into_iter()
        .zip(waiters)
        .filter_map(|(pid, waiter)| Some((pid, waiter?)))
        .collect();
    if let Err(e) = process::start_reaping() {
        tracing::error!("{e}");
    }
    handover
        .configs
        .into_iter()
        .map(|state| {
            let own = state
                .services
                .values()
                .filter_map(|s| s.pid)
                .filter_map(|pid| Some((pid, exits.remove(&pid)?)))
                .collect();
            (state.path.clone(), Adoption { state, exits: own })
        })
        .collect()
}

/// Closes every descriptor above stderr except `keep`: what a hand-over
/// that cannot be read would otherwise leak (pipes of services, which the
/// recovery stops anyway).
fn close_inherited(keep: &[RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: nothing in this process owns these yet (called before any
        // thread or file exists); the directory's own fd is closed already
        // or fails harmlessly with EBADF.
        unsafe { libc::close(fd) };
    }
}
