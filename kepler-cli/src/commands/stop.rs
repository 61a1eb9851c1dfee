//! `kepler stop [-s SIGNAL] [--clean] [service...]`: returns once the services
//! have stopped; prints `stopped all services` or `stopped web, db`. With
//! `--clean` (whole config only) the daemon also runs `pre_cleanup` and
//! removes the config's stored state.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kepler_protocol::{Request, Response};

use super::{not_loaded, request_printing_events, services_phrase};
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
    match request_printing_events(&mut client, request).await? {
        Response::NotLoaded { path } => println!("nothing to stop: {}", not_loaded(&path)),
        _ if clean => println!("stopped {what} and removed the config's stored state"),
        _ => println!("stopped {what}"),
    }
    Ok(ExitCode::SUCCESS)
}
