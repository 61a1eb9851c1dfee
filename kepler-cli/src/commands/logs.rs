//! `kepler logs [--follow] [--head N | --tail N] [--no-hook] [--timestamps |
//! --raw | --json] [service...]`: stored output as `service | line`,
//! coloured per service on a terminal, where control characters are shown
//! rather than sent (see `terminal_text`); `--raw` gives the bytes only and
//! `--json` one object per line (see `line_output`). A whole log is fetched
//! page by page; `--follow` then receives new lines as the daemon stores
//! them, until Ctrl+C. A config that is not loaded has no logs.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{check_grep, LogFilter, LogRange, Request, Response, ServerMessage};

use crate::cli::{now_us, LogsArgs};
use crate::client::{into_result, Client};
use crate::config_ref::config_ref;
use crate::line_output::LineFormat;

pub async fn run(file: Option<&Path>, args: LogsArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let range = match (args.head, args.tail) {
        (Some(n), _) => LogRange::Head(n),
        (_, Some(n)) => LogRange::Tail(n),
        _ => LogRange::All,
    };
    let printer = LineFormat::for_stdout(args.raw, args.json, args.timestamps);
    let filter = log_filter(&args, now_us())?;
    let mut client = Client::connect().await?;
    let request = Request::Logs {
        config: config.clone(),
        services: args.services,
        range,
        include_hooks: !args.no_hook,
        follow: args.follow,
        filter,
    };
    if args.follow {
        return follow(&mut client, request, printer).await;
    }
    let mut out = BufWriter::with_capacity(1024 * 1024, io::stdout().lock());
    let mut response = client.request(request).await?;
    if let Response::NotLoaded { path } = &response {
        eprintln!("kepler: {}", super::not_loaded(path));
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let Response::LogPage { lines, cursor } = response else {
            bail!("unexpected answer from the daemon: {response:?}");
        };
        // Ask for the next page before printing this one, so the daemon
        // reads while we print.
        let next = match cursor {
            Some(cursor) => Some(
                client
                    .send(Request::LogsPage {
                        config: config.clone(),
                        cursor,
                    })
                    .await?,
            ),
            None => None,
        };
        if printer.write_batch(&mut out, &lines).is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            return Ok(ExitCode::SUCCESS);
        }
        let Some(id) = next else { break };
        response = loop {
            match client.next_message().await? {
                ServerMessage::Response { id: got, response } if got == id => {
                    break into_result(response)?
                }
                _ => continue,
            }
        };
    }
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

/// Prints pushed lines until Ctrl+C (exit 0) or the daemon ends the stream.
async fn follow(client: &mut Client, request: Request, printer: LineFormat) -> Result<ExitCode> {
    let id = client.send(request).await?;
    let mut out = io::stdout().lock();
    loop {
        let message = tokio::select! {
            message = client.next_message() => message?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match message {
            ServerMessage::Event { id: got, event } if got == id => {
                let written = printer.write_event(&mut out, &event);
                if written.and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            ServerMessage::Response { id: got, response } if got == id => {
                if let Response::NotLoaded { path } = into_result(response)? {
                    eprintln!("kepler: {}", super::not_loaded(&path));
                }
                return Ok(ExitCode::SUCCESS);
            }
            _ => {}
        }
    }
}

/// `--since`, `--until` and `--grep` as the daemon takes them: times fixed
/// to moments (durations count back from `now_us`), checked before sending.
fn log_filter(args: &LogsArgs, now_us: u64) -> Result<LogFilter> {
    let since_us = args.since.map(|t| t.resolve(now_us));
    let until_us = args.until.map(|t| t.resolve(now_us));
    if let (Some(since), Some(until)) = (since_us, until_us) {
        if since > until {
            bail!("--since is after --until: no line can be in between");
        }
    }
    if let Some(pattern) = &args.grep {
        check_grep(pattern).map_err(anyhow::Error::msg)?;
    }
    Ok(LogFilter {
        since_us,
        until_us,
        grep: args.grep.clone(),
        ignore_case: args.ignore_case,
    })
}
