//! `kepler daemon start [-d]`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use kepler_protocol::{Request, Response};

use crate::client::Client;

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

/// `kepler-daemon` next to this binary first (an install or a cargo build
/// puts them side by side), then on PATH.
fn daemon_binary() -> Result<PathBuf> {
    const NAME: &str = "kepler-daemon";
    let exe = std::env::current_exe().context("cannot locate the kepler binary")?;
    if let Some(sibling) = exe.parent().map(|dir| dir.join(NAME)) {
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find {NAME} next to {} or on PATH; install both binaries (see the README)",
        exe.display()
    )
}
