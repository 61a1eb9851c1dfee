//! `kepler daemon restart [-d]`: stop the daemon if it runs, then start it.

use std::process::ExitCode;

use anyhow::Result;

use super::{start, stop};

pub async fn run(detach: bool) -> Result<ExitCode> {
    if stop::stop_if_running().await? {
        println!("kepler daemon stopped");
    }
    start::run(detach).await
}
