//! `kepler daemon stop`: returns once the daemon process has exited.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use kepler_protocol::{Request, Response};
use tokio::io::unix::AsyncFd;

use crate::client::{Client, ConnectError};

/// Upper bound for the final exit after the daemon closed its connections.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run() -> Result<ExitCode> {
    stop_daemon(Client::connect().await?).await?;
    println!("kepler daemon stopped");
    Ok(ExitCode::SUCCESS)
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
        // SAFETY: the AsyncFd owns the pidfd, so it stays open while registered.
        let fd = unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.into_parts().1)?;
        if tokio::time::timeout(EXIT_TIMEOUT, fd.readable())
            .await
            .is_err()
        {
            bail!("the daemon (pid {pid}) closed its connections but has not exited after {EXIT_TIMEOUT:?}");
        }
    }
    Ok(())
}

pub fn is_not_running(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<ConnectError>(),
        Some(ConnectError::NotRunning(_))
    )
}

/// A pidfd becomes readable when the process exits; `None` if it is already gone.
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success the kernel hands us a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
