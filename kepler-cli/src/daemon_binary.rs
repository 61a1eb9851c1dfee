//! Where the `kepler-daemon` binary is: `daemon start` runs it as the daemon,
//! `check` runs it to bake a config without a daemon.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const NAME: &str = "kepler-daemon";

/// `kepler-daemon` next to this binary first (an install or a cargo build
/// puts them side by side), then on PATH.
pub fn daemon_binary() -> Result<PathBuf> {
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
