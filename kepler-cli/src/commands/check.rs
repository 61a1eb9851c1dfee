//! `kepler check [-f FILE]`: validate a config without a daemon. The daemon
//! binary bakes it (`kepler-daemon check FILE`) with this CLI's environment
//! and prints the result or the errors; its output and exit status are ours.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::config_ref::find_config;
use crate::daemon_binary::daemon_binary;

pub fn run(file: Option<&Path>) -> Result<ExitCode> {
    let path = find_config(file)?;
    let binary = daemon_binary()?;
    let status = Command::new(&binary)
        .arg("check")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    // Death by signal N is reported as 128+N, as shells do.
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
