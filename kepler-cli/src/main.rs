//! `kepler`: the command-line client of the Kepler daemon.
//!
//! It parses the command line, sends requests over the daemon's socket and
//! renders the answers. All the work happens in the daemon.

mod bridges;
mod cli;
mod client;
mod commands;
mod config_ref;
mod daemon_binary;
mod event_output;
mod human_size;
mod human_time;
mod line_output;
mod progress;
mod style;
mod terminal_text;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 1 like every other failure; help and version exit 0.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote configs and paths that someone else may have written.
            let message = format!("{e:#}");
            eprintln!(
                "error: {}",
                terminal_text::TextMode::for_stderr().show(&message)
            );
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, which turns `kepler ps | head` into a panic on a
/// closed stdout; like other Unix tools, end quietly instead.
fn restore_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: runs first in main, before any other thread exists, and
    // installs the default disposition, not a handler.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
