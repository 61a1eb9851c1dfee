//! `kepler logs [--follow] [--head N | --tail N] [--no-hook] [--timestamps]
//! [--raw] [service...]`: stored output as `service | line`, coloured per
//! service on a terminal, where control characters are shown rather than
//! sent (see `terminal_text`) unless `--raw`. A whole log is fetched page by
//! page; `--follow` then receives new lines as the daemon stores them, until
//! Ctrl+C. A config that is not loaded has no logs.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{Event, LogBatch, LogLine, LogRange, Request, Response, ServerMessage};

use crate::cli::LogsArgs;
use crate::client::{into_result, Client};
use crate::config_ref::config_ref;
use crate::event_output::{line_prefix, log_time, write_event, write_log_text};
use crate::style::Paint;
use crate::terminal_text::TextMode;

pub async fn run(file: Option<&Path>, args: LogsArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let mut client = Client::connect().await?;
    let range = match (args.head, args.tail) {
        (Some(n), _) => LogRange::Head(n),
        (_, Some(n)) => LogRange::Tail(n),
        _ => LogRange::All,
    };
    let printer = Printer {
        paint: Paint::for_stdout(),
        mode: TextMode::for_stdout(args.raw),
        timestamps: args.timestamps,
    };
    let request = Request::Logs {
        config: config.clone(),
        services: args.services,
        range,
        include_hooks: !args.no_hook,
        follow: args.follow,
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
async fn follow(client: &mut Client, request: Request, printer: Printer) -> Result<ExitCode> {
    let id = client.send(request).await?;
    let mut out = io::stdout().lock();
    loop {
        let message = tokio::select! {
            message = client.next_message() => message?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match message {
            ServerMessage::Event { id: got, event } if got == id => {
                let written = match &event {
                    Event::Logs(lines) => lines.iter().try_for_each(|l| printer.write(&mut out, l)),
                    Event::Log(line) => printer.write(&mut out, line),
                    other => write_event(&mut out, other, printer.paint, printer.mode),
                };
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

#[derive(Clone, Copy)]
struct Printer {
    paint: Paint,
    mode: TextMode,
    /// `--timestamps`: every line with its time, whatever its service says.
    timestamps: bool,
}

impl Printer {
    /// Prints a page; each origin's prefix is rendered once per page.
    fn write_batch(&self, out: &mut impl Write, batch: &LogBatch) -> io::Result<()> {
        let prefixes: Vec<String> = batch
            .sources()
            .iter()
            .map(|s| line_prefix(&s.service, s.hook.as_deref(), s.stderr, self.paint))
            .collect();
        for line in batch {
            let prefix = &prefixes[line.source_id as usize];
            let show_time = line.source.show_time;
            self.write_text(out, prefix, show_time, line.timestamp_us, line.bytes)?;
        }
        Ok(())
    }

    fn write(&self, out: &mut impl Write, line: &LogLine) -> io::Result<()> {
        let prefix = line_prefix(&line.service, line.hook.as_deref(), line.stderr, self.paint);
        self.write_text(out, &prefix, line.show_time, line.timestamp_us, &line.bytes)
    }

    fn write_text(
        &self,
        out: &mut impl Write,
        prefix: &str,
        show_time: bool,
        timestamp_us: u64,
        bytes: &[u8],
    ) -> io::Result<()> {
        let stamp = (self.timestamps || show_time).then(|| log_time(timestamp_us));
        write_log_text(out, stamp.as_deref(), prefix, bytes, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(
            log_time(1_000_000_000_123_456),
            "2001-09-09T01:46:40.123456Z"
        );
    }

    #[test]
    fn a_line_prints_with_its_time_when_asked() {
        let line = LogLine {
            service: "web".into(),
            hook: None,
            stderr: false,
            show_time: false,
            timestamp_us: 0,
            bytes: b"hello".to_vec(),
        };
        let mut out = Vec::new();
        let printer = Printer {
            paint: Paint::PLAIN,
            mode: TextMode::Plain,
            timestamps: true,
        };
        printer.write(&mut out, &line).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000000Z web | hello\n"
        );
    }

    #[test]
    fn a_page_prints_each_line_with_its_origin_lossily_and_the_time_where_its_service_asks() {
        let lines = [
            ("web", None, false, &b"up\r"[..]),
            ("db", Some("pre_start"), false, b"migrating"),
            ("web", None, true, b"caf\xe9"),
            ("web", None, false, b"one\ntwo"),
        ];
        let batch: LogBatch = lines
            .iter()
            .map(|(service, hook, stderr, bytes)| LogLine {
                service: service.to_string(),
                hook: hook.map(String::from),
                stderr: *stderr,
                show_time: *service == "db",
                timestamp_us: 0,
                bytes: bytes.to_vec(),
            })
            .collect();
        let mut out = Vec::new();
        let printer = Printer {
            paint: Paint::PLAIN,
            mode: TextMode::Plain,
            timestamps: false,
        };
        printer.write_batch(&mut out, &batch).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web | up\n1970-01-01T00:00:00.000000Z db[pre_start] | migrating\nweb | caf\u{fffd}\n\
             web | one\nweb | two\n"
        );
    }
}
