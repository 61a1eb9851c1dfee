//! `kepler start [-d [--wait [--timeout T] [--progress STYLE]]] [service...]`.
//!
//! Exit status: `-d` and `-d --wait` exit 0 once the daemon answers and 1 on
//! its error. Attached (no `-d`) exits 0 when the daemon reports every
//! service in a terminal state, 1 on its error, 130 after a second Ctrl+C.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{ConfigRef, Request, Response, StartMode};

use super::attach::{self, Followed};
use super::{request_printing_events, services_phrase};
use crate::cli::StartArgs;
use crate::client::Client;
use crate::config_ref::{config_ref, sys_env};
use crate::line_output::LineFormat;
use crate::progress::StartupProgress;

pub async fn run(file: Option<&Path>, args: StartArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let request = Request::Start {
        config: config.clone(),
        sys_env: sys_env()?,
        services: args.services.clone(),
        mode: start_mode(&args),
    };
    run_in_mode(request, config, &args, Wording::START).await
}

/// What the confirmations of `start` and `restart` say.
pub(super) struct Wording {
    /// Present participle, for `-d`: "starting".
    pub ongoing: &'static str,
    /// Past participle, for the summary of `-d --wait`: "started".
    pub done: &'static str,
}

impl Wording {
    const START: Wording = Wording {
        ongoing: "starting",
        done: "started",
    };
}

pub(super) fn start_mode(args: &StartArgs) -> StartMode {
    match (args.detach, args.wait) {
        (false, _) => StartMode::Attached,
        (true, false) => StartMode::Detached,
        (true, true) => StartMode::Wait {
            // Saturates rather than wraps: a timeout of centuries is no timeout.
            timeout_ms: args
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        },
    }
}

/// Sends a start or restart `request` and follows it as its mode says.
pub(super) async fn run_in_mode(
    request: Request,
    config: ConfigRef,
    args: &StartArgs,
    wording: Wording,
) -> Result<ExitCode> {
    let mut client = Client::connect().await?;
    let what = services_phrase(&args.services);
    match start_mode(args) {
        StartMode::Attached => {
            let stop = Request::Stop {
                config,
                services: args.services.clone(),
                signal: None,
                clean: false,
            };
            match attach::follow(
                &mut client,
                request,
                stop,
                LineFormat::for_stdout(args.raw, args.json, false),
            )
            .await?
            {
                Followed::Answered(_) => Ok(ExitCode::SUCCESS),
                Followed::Interrupted => Ok(ExitCode::from(attach::INTERRUPTED)),
            }
        }
        StartMode::Detached => {
            request_printing_events(&mut client, request).await?;
            println!(
                "{} {what} in the background; `kepler ps` shows their state",
                wording.ongoing
            );
            Ok(ExitCode::SUCCESS)
        }
        StartMode::Wait { .. } => wait_showing_progress(&mut client, request, args, &wording).await,
    }
}

/// `-d --wait`: live progress while the daemon waits, then the summary.
pub(super) async fn wait_showing_progress(
    client: &mut Client,
    request: Request,
    args: &StartArgs,
    wording: &Wording,
) -> Result<ExitCode> {
    let mut progress = StartupProgress::new(args.progress);
    let answer = client
        .request_with_events(request, |event| progress.on_event(event))
        .await;
    // The display is complete before the summary or the error is printed.
    progress.finish();
    match answer? {
        Response::Started { ready, deferred } => {
            println!("{}", summary(wording.done, &ready, &deferred))
        }
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `-d --wait` did, in one line: `started 2 services (db, web); 1
/// deferred (monitor)`.
fn summary(done: &str, ready: &[String], deferred: &[String]) -> String {
    fn counted(n: usize) -> String {
        let plural = if n == 1 { "" } else { "s" };
        format!("{n} service{plural}")
    }
    let mut line = format!("{done} {}", counted(ready.len()));
    if !ready.is_empty() {
        line += &format!(" ({})", ready.join(", "));
    }
    if !deferred.is_empty() {
        line += &format!("; {} deferred ({})", deferred.len(), deferred.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::ProgressChoice;

    fn args(detach: bool, wait: bool, timeout: Option<Duration>) -> StartArgs {
        StartArgs {
            detach,
            wait,
            timeout,
            progress: ProgressChoice::Auto,
            raw: false,
            json: false,
            services: vec![],
        }
    }

    #[test]
    fn the_wait_summary_counts_and_names_ready_and_deferred_services() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary("started", &names(&["db", "web"]), &names(&["monitor"])),
            "started 2 services (db, web); 1 deferred (monitor)"
        );
        assert_eq!(
            summary("restarted", &names(&["web"]), &[]),
            "restarted 1 service (web)"
        );
        assert_eq!(
            summary("started", &[], &names(&["a", "b"])),
            "started 0 services; 2 deferred (a, b)"
        );
    }

    #[test]
    fn flags_choose_the_start_mode() {
        assert_eq!(start_mode(&args(false, false, None)), StartMode::Attached);
        assert_eq!(start_mode(&args(true, false, None)), StartMode::Detached);
        assert_eq!(
            start_mode(&args(true, true, None)),
            StartMode::Wait { timeout_ms: None }
        );
        assert_eq!(
            start_mode(&args(true, true, Some(Duration::from_secs(30)))),
            StartMode::Wait {
                timeout_ms: Some(30_000)
            }
        );
    }
}
