//! `kepler daemon start [-d]`.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use kepler_protocol::{Request, Response};

use crate::client::Client;
use crate::daemon_binary::daemon_binary;

pub async fn run(detach: bool) -> Result<ExitCode> {
    let binary = daemon_binary()?;
    if !detach {
        // Become the daemon, so Ctrl+C and a service manager's signals reach it.
        let err = Command::new(&binary).exec();
        bail!("cannot run {}: {err}", binary.display());
    }
    // `--detach` returns only once the daemon accepts connections, and prints
    // its own start-up errors to our stderr.
    let status = Command::new(&binary)
        .arg("--detach")
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    let mut client = Client::connect().await?;
    match client.request(Request::DaemonStatus).await? {
        Response::DaemonStatus(status) => println!(
            "kepler daemon started (pid {}, state dir {})",
            status.pid,
            status.state_dir.display()
        ),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
