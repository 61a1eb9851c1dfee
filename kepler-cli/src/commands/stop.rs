//! `kepler stop [-s SIGNAL] [--clean] [service...]`: returns once the services
//! have stopped; prints `stopped all services` or `stopped web, db`. With
//! `--clean` (whole config only) the daemon also runs `pre_cleanup` and
//! removes the config's stored state.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kepler_protocol::Request;

use super::{request_printing_events, services_phrase};
use crate::cli::StopArgs;
use crate::client::Client;
use crate::config_ref::config_ref;

pub async fn run(file: Option<&Path>, args: StopArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let mut client = Client::connect().await?;
    let what = services_phrase(&args.services);
    let request = Request::Stop {
        config,
        services: args.services,
        signal: args.signal,
        clean: args.clean,
    };
    let clean = args.clean;
    request_printing_events(&mut client, request).await?;
    if clean {
        println!("stopped {what} and removed the config's stored state");
    } else {
        println!("stopped {what}");
    }
    Ok(ExitCode::SUCCESS)
}
