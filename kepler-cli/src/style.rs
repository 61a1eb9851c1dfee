//! Colour: whether to use it, and the styles the CLI's output shares.
//!
//! Colour is on only when stdout is a terminal, `NO_COLOR` is unset or empty
//! and `TERM` is not `dumb`. Renderers take a [`Paint`] instead of looking at
//! the terminal themselves, so tests can render both ways.

use std::io::IsTerminal;

use kepler_protocol::ServiceStatus;
use owo_colors::{OwoColorize, Style};

/// Paints text when colour is enabled and passes it through otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paint {
    enabled: bool,
}

impl Paint {
    #[cfg(test)]
    pub const PLAIN: Paint = Paint { enabled: false };
    #[cfg(test)]
    pub const COLOUR: Paint = Paint { enabled: true };

    /// Colour for what goes to stdout, decided from the environment.
    pub fn for_stdout() -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|v| v == "dumb");
        Paint {
            enabled: !no_color && !dumb && std::io::stdout().is_terminal(),
        }
    }

    /// No colour, whatever the terminal.
    pub fn plain() -> Paint {
        Paint { enabled: false }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    pub fn paint(self, text: &str, style: Style) -> String {
        if self.enabled {
            text.style(style).to_string()
        } else {
            text.to_string()
        }
    }
}

/// Colours given to service names; none of them is red, which means trouble.
const SERVICE_PALETTE: [fn(Style) -> Style; 6] = [
    Style::cyan,
    Style::green,
    Style::yellow,
    Style::magenta,
    Style::blue,
    Style::bright_cyan,
];

/// A service's colour: a hash of its name, so it is the same on every run and
/// in every command.
pub fn service_style(service: &str) -> Style {
    // FNV-1a: tiny, and stable across Rust releases (unlike std's hasher).
    let hash = service
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    SERVICE_PALETTE[(hash % SERVICE_PALETTE.len() as u64) as usize](Style::new())
}

/// Failed, or exited with a non-zero code: shown in red.
pub fn went_wrong(status: ServiceStatus) -> bool {
    match status {
        ServiceStatus::Failed => true,
        ServiceStatus::Exited(code) => code != 0,
        _ => false,
    }
}

pub fn dim() -> Style {
    Style::new().dimmed()
}

pub fn error() -> Style {
    Style::new().red()
}

/// Something that went right (a service ready).
pub fn ready() -> Style {
    Style::new().green()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paint_leaves_text_alone() {
        assert_eq!(Paint::PLAIN.paint("web", service_style("web")), "web");
    }

    #[test]
    fn colour_paint_wraps_text_in_escapes() {
        let painted = Paint::COLOUR.paint("web", dim());
        assert!(
            painted.starts_with('\x1b') && painted.contains("web"),
            "{painted:?}"
        );
    }

    #[test]
    fn a_service_keeps_its_colour_and_names_spread_over_the_palette() {
        assert_eq!(service_style("web"), service_style("web"));
        let names = [
            "web", "db", "cache", "worker", "api", "queue", "mail", "cron",
        ];
        let distinct: std::collections::HashSet<_> = names
            .iter()
            .map(|name| format!("{:?}", service_style(name)))
            .collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
    }
}
