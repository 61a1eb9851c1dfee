//! `kepler recreate`: bake the config again from its file. The daemon refuses
//! while any of its services runs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kepler_protocol::Request;

use super::request_printing_events;
use crate::client::Client;
use crate::config_ref::{config_ref, sys_env};

pub async fn run(file: Option<&Path>) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let path = config.path.clone();
    let request = Request::Recreate {
        config,
        sys_env: sys_env()?,
    };
    let mut client = Client::connect().await?;
    request_printing_events(&mut client, request).await?;
    println!("recreated {}", path.display());
    Ok(ExitCode::SUCCESS)
}
