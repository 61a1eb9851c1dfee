//! Signal names as people type them (`SIGTERM`, `term`, `15`) and as the
//! daemon prints them.
//!
//! Parsing lives here so the CLI flag, the config and the orchestrator all
//! accept the same spellings; the process layer itself takes
//! [`nix::sys::signal::Signal`].

use std::str::FromStr;

use nix::sys::signal::Signal;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown signal `{0}`; use a name like SIGTERM, TERM or a number like 15")]
pub struct SignalParseError(pub String);

/// Parses `SIGTERM`, `TERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal, SignalParseError> {
    let trimmed = text.trim();
    let parsed = if let Ok(number) = trimmed.parse::<i32>() {
        Signal::try_from(number).ok()
    } else {
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full).ok()
    };
    parsed.ok_or_else(|| SignalParseError(text.to_owned()))
}

/// `SIGTERM`-style name of a raw signal number, falling back to the number
/// for realtime signals, which have no fixed name.
pub fn signal_name(signal: i32) -> String {
    match Signal::try_from(signal) {
        Ok(signal) => signal.as_str().to_owned(),
        Err(_) => format!("signal {signal}"),
    }
}
