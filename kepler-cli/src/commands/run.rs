//! `kepler run [-d [--wait ...]] [--keep-state] [--abort-on-failure]
//! [--exit-code-from SERVICE] [service...]`: an ephemeral run, for CI.
//!
//! The daemon bakes the config afresh, starts it as `kepler start` would
//! and removes its state once every service has ended (unless
//! `--keep-state`). Attached, `run` exits with the run's code: 0 when every
//! service ended well, else the code of the first that failed (or of the
//! `--exit-code-from` service); 130 after a second Ctrl+C. `-d` and `-d
//! --wait` exit as for `start`, and the run goes on in the daemon.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{Request, Response, RunOptions, StartMode};

use super::attach::{self, Followed};
use super::start::{start_mode, wait_showing_progress, Wording};
use super::{request_printing_events, services_phrase};
use crate::cli::RunArgs;
use crate::client::Client;
use crate::config_ref::{config_ref, sys_env};
use crate::line_output::LineFormat;

const WORDING: Wording = Wording {
    ongoing: "running",
    done: "started",
};

pub async fn run(file: Option<&Path>, args: RunArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let mode = start_mode(&args.start);
    let request = Request::Run {
        config: config.clone(),
        sys_env: sys_env()?,
        services: args.start.services.clone(),
        mode,
        options: RunOptions {
            keep_state: args.keep_state,
            abort_on_failure: args.abort_on_failure,
            exit_code_from: args.exit_code_from.clone(),
        },
    };
    let mut client = Client::connect().await?;
    match mode {
        StartMode::Attached => {
            // Ctrl+C stops the whole run, whatever services it was given.
            let stop = Request::Stop {
                config,
                services: Vec::new(),
                signal: None,
                clean: false,
            };
            match attach::follow(
                &mut client,
                request,
                stop,
                LineFormat::for_stdout(args.start.raw, args.start.json, false),
            )
            .await?
            {
                Followed::Answered(Response::RunEnded {
                    exit_code,
                    cause,
                    cleanup_error,
                }) => {
                    if let Some(error) = cleanup_error {
                        eprintln!("warning: the run's state was kept: {error}");
                    }
                    if let Some(cause) = cause {
                        eprintln!("kepler run: exit code {exit_code}: {cause}");
                    }
                    Ok(exit_status(exit_code))
                }
                Followed::Answered(other) => bail!("unexpected answer from the daemon: {other:?}"),
                Followed::Interrupted => Ok(ExitCode::from(attach::INTERRUPTED)),
            }
        }
        StartMode::Detached => {
            request_printing_events(&mut client, request).await?;
            let kept = if args.keep_state {
                "their state is kept"
            } else {
                "their state is removed once they have all ended"
            };
            println!(
                "{} {} in the background; {kept}; `kepler ps` shows them",
                WORDING.ongoing,
                services_phrase(&args.start.services)
            );
            Ok(ExitCode::SUCCESS)
        }
        StartMode::Wait { .. } => {
            wait_showing_progress(&mut client, request, &args.start, &WORDING).await
        }
    }
}

/// A service's exit code as this process's: 1 to 255 as they are, 1 for
/// anything a process cannot exit with.
fn exit_status(code: i32) -> ExitCode {
    match u8::try_from(code) {
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_become_exit_statuses() {
        assert_eq!(exit_status(0), ExitCode::SUCCESS);
        assert_eq!(exit_status(3), ExitCode::from(3));
        assert_eq!(exit_status(143), ExitCode::from(143));
        assert_eq!(exit_status(-1), ExitCode::FAILURE);
        assert_eq!(exit_status(300), ExitCode::FAILURE);
    }
}
