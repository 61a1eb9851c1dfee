//! `kepler restart [-d [--wait [--timeout T]]] [service...]`: stop then start,
//! with the same modes and exit statuses as `kepler start`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kepler_protocol::Request;

use super::start::{run_in_mode, start_mode, Wording};
use crate::cli::StartArgs;
use crate::config_ref::{config_ref, sys_env};

const WORDING: Wording = Wording {
    ongoing: "restarting",
    done: "restarted",
};

pub async fn run(file: Option<&Path>, args: StartArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let request = Request::Restart {
        config: config.clone(),
        sys_env: sys_env()?,
        services: args.services.clone(),
        mode: start_mode(&args),
    };
    run_in_mode(request, config, &args, WORDING).await
}
