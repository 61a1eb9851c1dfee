//! Following an attached `start` or `restart`: print the request's events
//! until the daemon's final answer, which comes once every service has
//! reached a terminal state.
//!
//! The first Ctrl+C sends a stop for the same services on the same connection
//! and keeps printing (the stopping services' output is still streamed); the
//! second one leaves at once with exit status 130, services left as they
//! are (a `kepler run` then stops them: its client is gone).

use std::io::{self, Write};

use anyhow::{Context, Result};
use kepler_protocol::{Request, RequestId, Response, ServerMessage};
use tokio::signal::unix::{signal, SignalKind};

use crate::client::{into_result, Client};
use crate::line_output::LineFormat;
use crate::terminal_text::TextMode;

/// Exit status after a second Ctrl+C, as shells report death by SIGINT.
pub const INTERRUPTED: u8 = 130;

/// How following a request ended.
pub enum Followed {
    /// The daemon's final answer (never an error: those are returned as one).
    Answered(Response),
    /// A second Ctrl+C: left without waiting.
    Interrupted,
}

/// Sends `request` and prints its events until its final response; `stop`
/// is sent on the first Ctrl+C. The daemon's message is the error on
/// `Error`. Output and notes are written as `format` says.
pub async fn follow(
    client: &mut Client,
    request: Request,
    stop: Request,
    format: LineFormat,
) -> Result<Followed> {
    // Installed before sending, so a Ctrl+C from here on is never the default
    // "exit at once".
    let mut interrupts =
        signal(SignalKind::interrupt()).context("cannot listen for Ctrl+C (SIGINT)")?;
    let request_id = client.send(request).await?;
    let mut stop_id: Option<RequestId> = None;
    let mut stop_answered = false;
    let mut outcome = None;
    // Both answers are awaited, so a failed stop is reported before exiting.
    while outcome.is_none() || (stop_id.is_some() && !stop_answered) {
        tokio::select! {
            message = client.next_message() => match message? {
                ServerMessage::Event { id, event } if id == request_id || Some(id) == stop_id => {
                    let mut out = io::stdout().lock();
                    format
                        .write_event(&mut out, &event)
                        .and_then(|()| out.flush())
                        .context("cannot write to stdout")?;
                }
                ServerMessage::Response { id, response } if id == request_id => {
                    outcome = Some(into_result(response));
                }
                ServerMessage::Response { id, response } if Some(id) == stop_id => {
                    stop_answered = true;
                    if let Err(e) = into_result(response) {
                        let message = format!("{e:#}");
                        let message = TextMode::for_stderr().show(&message);
                        eprintln!("error: cannot stop the services: {message}");
                    }
                }
                _ => {}
            },
            _ = interrupts.recv() => {
                if stop_id.is_some() {
                    return Ok(Followed::Interrupted);
                }
                eprintln!("stopping services... (press Ctrl+C again to exit without waiting)");
                stop_id = Some(client.send(stop.clone()).await?);
            }
        }
    }
    Ok(Followed::Answered(
        outcome.expect("the loop ends with an answer")?,
    ))
}
