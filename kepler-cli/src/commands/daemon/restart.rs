//! `kepler daemon restart [-d]`: stop the daemon if it runs, then start it.

use std::process::ExitCode;

use anyhow::Result;

use super::{start, stop};
use crate::client::Client;

pub async fn run(detach: bool) -> Result<ExitCode> {
    match Client::connect().await {
        Ok(client) => {
            stop::stop_daemon(client).await?;
            println!("kepler daemon stopped");
        }
        Err(e) => {
            let e = anyhow::Error::from(e);
            if !stop::is_not_running(&e) {
                return Err(e);
            }
        }
    }
    start::run(detach).await
}
