//! `kepler daemon upgrade`: the running daemon hands over to a new binary
//! (same pid, services untouched); returns once the new one answers.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kepler_protocol::{Request, Response};

use crate::client::Client;

pub async fn run(binary: Option<PathBuf>) -> Result<ExitCode> {
    // The daemon has no working directory of ours: send an absolute path.
    let binary = match binary {
        Some(path) if path.is_relative() => Some(
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(path),
        ),
        other => other,
    };
    let mut client = Client::connect().await?;
    let (pid, from_version, binary) = match client.request(Request::Upgrade { binary }).await? {
        Response::Upgrading {
            pid,
            from_version,
            binary,
        } => (pid, from_version, binary),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    println!(
        "kepler daemon {from_version} (pid {pid}) is handing over to {}",
        binary.display()
    );
    // The socket stayed open: this connection waits in its backlog and is
    // served by the new daemon once it has resumed.
    let mut client = Client::connect()
        .await
        .context("the new daemon did not answer after the upgrade")?;
    let status = match client.request(Request::DaemonStatus).await? {
        Response::DaemonStatus(status) => status,
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    if status.pid != pid {
        bail!(
            "the daemon now runs as pid {} instead of {pid}: the hand-over failed and a new \
             daemon started; see daemon.log",
            status.pid
        );
    }
    println!(
        "kepler daemon upgraded: {from_version} -> {} (pid {pid}, services untouched)",
        status.version
    );
    Ok(ExitCode::SUCCESS)
}
