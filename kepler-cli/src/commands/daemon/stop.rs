//! `kepler daemon stop`: returns once the daemon process has exited.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use kepler_protocol::{Request, Response};
use tokio::io::unix::AsyncFd;

use crate::client::{Client, ConnectError};

/// Upper bound for the final exit after the daemon closed its connections.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a daemon we cannot talk to gets to stop its services and exit
/// after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run() -> Result<ExitCode> {
    if !stop_if_running().await? {
        bail!(ConnectError::NotRunning(crate::client::socket_path()));
    }
    println!("kepler daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// Stops the daemon if one runs; false if none does. A daemon of another
/// protocol version (the one left running by an upgrade) cannot be asked to
/// shut down, so root stops it the way systemd would: SIGTERM, on which it
/// stops every service and exits.
pub async fn stop_if_running() -> Result<bool> {
    match Client::connect().await {
        Ok(client) => stop_daemon(client).await.map(|()| true),
        Err(ConnectError::NotRunning(_)) => Ok(false),
        Err(ConnectError::Refused {
            reason,
            daemon_pid: Some(pid),
        }) if nix::unistd::Uid::effective().is_root() => {
            eprintln!("kepler: {reason}");
            eprintln!("kepler: stopping that daemon (pid {pid}) with SIGTERM instead");
            terminate(pid).await.map(|()| true)
        }
        Err(e) => Err(e.into()),
    }
}

async fn terminate(pid: u32) -> Result<()> {
    let Some(pidfd) = pidfd_open(pid) else {
        return Ok(()); // already gone
    };
    // Signalled through the pidfd, so a recycled pid cannot be hit.
    // SAFETY: plain syscall on a pidfd we own.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGTERM,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent != 0 {
        bail!(
            "cannot send SIGTERM to the daemon (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    if !exited_within(pidfd, TERMINATE_TIMEOUT).await? {
        bail!(
            "the daemon (pid {pid}) has not exited {TERMINATE_TIMEOUT:?} after SIGTERM; see \
             what it is waiting for in its log, or end it with `sudo kill -KILL {pid}`"
        );
    }
    Ok(())
}

/// Asks the daemon to shut down and waits until its process is gone.
pub async fn stop_daemon(mut client: Client) -> Result<()> {
    let pid = match client.request(Request::Shutdown).await? {
        Response::ShuttingDown { pid } => pid,
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    // Opened before waiting, so the exit cannot be missed (or confused with a
    // later process reusing the pid).
    let exited = pidfd_open(pid);
    // The daemon closes connections only after every service has stopped.
    client.closed().await;
    if let Some(pidfd) = exited {
        if !exited_within(pidfd, EXIT_TIMEOUT).await? {
            bail!("the daemon (pid {pid}) closed its connections but has not exited after {EXIT_TIMEOUT:?}");
        }
    }
    Ok(())
}

/// Waits up to `limit` for the process behind `pidfd` to exit.
async fn exited_within(pidfd: OwnedFd, limit: Duration) -> Result<bool> {
    // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
    let fd = unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.into_parts().1)?;
    Ok(tokio::time::timeout(limit, fd.readable()).await.is_ok())
}

/// A pidfd becomes readable when the process exits; `None` if it is already gone.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success the kernel hands us a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
