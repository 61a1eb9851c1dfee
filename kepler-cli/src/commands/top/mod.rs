//! `kepler top [--all] [--once]`: a full-screen view of the services that
//! the daemon keeps up to date. One `Top` request subscribes to frames
//! (pushed after state changes and sampling ticks; the client never polls);
//! the log pane follows one service's logs on a second connection, and `r`
//! and `x` send a restart or stop on a connection of their own once
//! confirmed.
//!
//! The terminal is put back (raw mode off, main screen, cursor shown) when
//! the view ends for any reason: `q`, Ctrl+C (a key in raw mode), SIGTERM,
//! SIGHUP, an error, or a panic (through the panic hook).

mod model;
mod render;
mod screen;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{ConfigRef, Event, Request, Response, ServerMessage, TopFrame};

use crate::cli::TopArgs;
use crate::client::Client;
use crate::config_ref::config_ref;

pub use model::Model;
pub use render::plain_frame;

/// Width of `--once` output when stdout is not a terminal.
const PLAIN_WIDTH: u16 = 140;

pub async fn run(file: Option<&Path>, args: TopArgs) -> Result<ExitCode> {
    let config = if args.all {
        None
    } else {
        Some(config_ref(file)?)
    };
    let title = config.as_ref().map_or_else(
        || "all configs".to_owned(),
        |c| c.path.to_string_lossy().into_owned(),
    );
    let mut client = Client::connect().await?;
    client
        .send(Request::Top {
            config: config.clone(),
            history: model::SPARK_SAMPLES as u32,
        })
        .await?;
    let Some(first) = next_frame(&mut client, config.as_ref().map(|c| c.path.as_path())).await?
    else {
        bail!("the daemon ended the view before its first frame");
    };
    let mut model = Model::new(title, args.all);
    model.apply(first);
    if args.once {
        let width = if std::io::stdout().is_terminal() {
            ratatui::crossterm::terminal::size().map_or(PLAIN_WIDTH, |(w, _)| w)
        } else {
            PLAIN_WIDTH
        };
        print!("{}", plain_frame(&model, width));
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        bail!("`kepler top` needs a terminal; use `kepler top --once` for plain text");
    }
    screen::run(client, model).await?;
    Ok(ExitCode::SUCCESS)
}

/// The next frame of the subscription; `None` once the daemon ended it.
async fn next_frame(client: &mut Client, path: Option<&Path>) -> Result<Option<TopFrame>> {
    loop {
        match client.next_message().await? {
            ServerMessage::Event {
                event: Event::Top(frame),
                ..
            } => return Ok(Some(frame)),
            ServerMessage::Event { .. } => {}
            ServerMessage::Response { response, .. } => {
                return match response {
                    Response::Error { message, .. } => bail!("{message}"),
                    Response::NotLoaded { path: loaded } => {
                        bail!("{}", super::not_loaded(path.unwrap_or(&loaded)))
                    }
                    _ => Ok(None),
                };
            }
        }
    }
}

/// The config a row belongs to, as a request names it.
fn config_of(path: &Path) -> ConfigRef {
    ConfigRef {
        path: PathBuf::from(path),
    }
}
