//! One module per verb: each builds its request and renders the answer.
//! `attach` follows an attached start, restart or run.

mod attach;
mod check;
mod completions;
mod daemon;
mod export;
mod import;
mod inspect;
mod logs;
mod prune;
mod ps;
mod recreate;
mod restart;
mod run;
mod scale;
mod start;
mod stats;
mod stop;
mod top;

use std::process::ExitCode;

use std::path::Path;

use anyhow::Result;
use kepler_protocol::{Request, Response};

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::event_output::print_event;
use crate::style::Paint;
use crate::terminal_text::TextMode;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let file = cli.file.as_deref();
    match cli.command {
        Command::Daemon(command) => daemon::run(command).await,
        Command::Start(args) => start::run(file, args).await,
        Command::Stop(args) => stop::run(file, args).await,
        Command::Restart(args) => restart::run(file, args).await,
        Command::Run(args) => run::run(file, args).await,
        Command::Recreate => recreate::run(file).await,
        Command::Ps(args) => ps::run(file, args).await,
        Command::Logs(args) => logs::run(file, args).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Scale(args) => scale::run(file, args).await,
        Command::Check => check::run(file),
        Command::Completions { shell } => completions::run(shell),
        Command::Import(args) => import::run(args),
        Command::Export(command) => export::run(file, command),
        Command::Stats(args) => stats::run(file, args).await,
        Command::Top(args) => top::run(file, args).await,
        Command::Inspect(args) => inspect::run(file, args).await,
    }
}

/// Sends `request`, printing whatever events the daemon pushes for it
/// (progress, state changes) before its final answer, which it returns.
async fn request_printing_events(client: &mut Client, request: Request) -> Result<Response> {
    let paint = Paint::for_stdout();
    let mode = TextMode::for_stdout(false);
    client
        .request_with_events(request, |event| {
            // A closed stdout must not stop the request half-way.
            let _ = print_event(&event, paint, mode);
        })
        .await
}

/// What a command that only looks at a config says when it is not loaded:
/// like `docker compose` for a project never started, there is nothing.
fn not_loaded(path: &Path) -> String {
    format!(
        "{} is not loaded (never started, or pruned); `kepler start` loads and starts it",
        path.display()
    )
}

/// "all services", or the names the user gave: "web, db".
fn services_phrase(services: &[String]) -> String {
    if services.is_empty() {
        "all services".into()
    } else {
        services.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_or_all() {
        assert_eq!(services_phrase(&[]), "all services");
        assert_eq!(services_phrase(&["web".into(), "db".into()]), "web, db");
    }
}
