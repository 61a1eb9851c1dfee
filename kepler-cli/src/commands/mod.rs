//! One module per verb: each builds its request and renders the answer.

mod daemon;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Daemon(command) => daemon::run(command).await,
    }
}
