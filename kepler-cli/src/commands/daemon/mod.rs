//! `kepler daemon ...`: start, stop, restart and inspect the daemon.

mod restart;
mod start;
mod status;
mod stop;
mod upgrade;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::DaemonCommand;

pub async fn run(command: DaemonCommand) -> Result<ExitCode> {
    match command {
        DaemonCommand::Start { detach } => start::run(detach).await,
        DaemonCommand::Stop => stop::run().await,
        DaemonCommand::Restart { detach } => restart::run(detach).await,
        DaemonCommand::Status => status::run().await,
        DaemonCommand::Upgrade { binary } => upgrade::run(binary).await,
    }
}
