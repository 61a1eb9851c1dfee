//! Live progress of `start -d --wait`, `restart -d --wait` and `run -d
//! --wait`: one line per waited service, like `docker compose up`.
//!
//! On a terminal each line is redrawn in place (indicatif): a spinner and
//! what the service waits for, then a mark and how it ended up (`running`,
//! `healthy`, `exited (0)`, `failed: why`) with the time it took. Otherwise
//! (stdout or stderr not a terminal, `NO_COLOR`, `TERM=dumb`, `--progress
//! plain`) every change is one plain line. Progress goes to stderr; stdout
//! keeps the one-line summary that scripts read.

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kepler_protocol::{Event, ServiceStatus, WaitedService};

use crate::cli::ProgressChoice;
use crate::event_output::write_event;
use crate::style::{self, Paint};
use crate::terminal_text::TextMode;

/// How a service's line looks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// On its way; the spinner turns.
    Working,
    /// Ready: running (or healthy), or completed.
    Ready,
    /// Failed, or exited with an error.
    Failed,
    /// Down, or never became ready before the wait ended.
    Idle,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Mark::Working => "…",
            Mark::Ready => "✔",
            Mark::Failed => "✘",
            Mark::Idle => "-",
        }
    }
}

/// A service's state as its progress line says it.
pub fn describe(status: ServiceStatus, reason: Option<&str>, healthcheck: bool) -> (Mark, String) {
    let with_reason = |text: String| match reason {
        Some(reason) => format!("{text}: {reason}"),
        None => text,
    };
    match status {
        ServiceStatus::Starting => (
            Mark::Working,
            reason.map_or_else(|| "starting".into(), String::from),
        ),
        ServiceStatus::Running if healthcheck => {
            (Mark::Working, "running, waiting to be healthy".into())
        }
        ServiceStatus::Running => (Mark::Ready, "running".into()),
        ServiceStatus::Healthy => (Mark::Ready, "healthy".into()),
        ServiceStatus::Unhealthy => (Mark::Working, with_reason("unhealthy".into())),
        ServiceStatus::Stopping => (Mark::Working, "stopping".into()),
        ServiceStatus::Stopped => (Mark::Idle, with_reason("stopped".into())),
        ServiceStatus::Exited(0) => (Mark::Ready, "exited (0)".into()),
        // An exit with a restart ahead says so in its reason.
        ServiceStatus::Exited(_) if reason.is_some() => (Mark::Working, with_reason(status.name())),
        ServiceStatus::Exited(_) => (Mark::Failed, status.name()),
        ServiceStatus::Failed => (Mark::Failed, with_reason("failed".into())),
    }
}

/// Seconds with one decimal: `1.2s`.
fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

/// Whether progress is drawn in place (`auto` on a terminal with colour)
/// or written as plain lines.
pub fn is_live(choice: ProgressChoice) -> bool {
    choice == ProgressChoice::Auto
        && io::stdout().is_terminal()
        && io::stderr().is_terminal()
        && Paint::for_stdout().enabled()
}

struct Line {
    service: WaitedService,
    bar: Option<ProgressBar>,
    /// What was last shown, so plain output has one line per change.
    shown: Option<(Mark, String)>,
}

/// The progress display of one `--wait` request.
pub struct StartupProgress {
    started: Instant,
    live: Option<MultiProgress>,
    paint: Paint,
    /// How others' text (reasons) is shown on stderr.
    mode: TextMode,
    lines: Vec<Line>,
    /// Where each service's line is: an update must not search ten thousand.
    line_of: HashMap<String, usize>,
    width: usize,
    finished: bool,
}

impl StartupProgress {
    pub fn new(choice: ProgressChoice) -> Self {
        let live =
            is_live(choice).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        StartupProgress {
            started: Instant::now(),
            paint: if live.is_some() {
                Paint::for_stdout()
            } else {
                Paint::plain()
            },
            live,
            mode: TextMode::for_stderr(),
            lines: Vec::new(),
            line_of: HashMap::new(),
            width: 0,
            finished: false,
        }
    }

    /// Takes an event the daemon pushed for the request.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::StartupPlan { services } => self.plan(services),
            Event::ServiceState {
                service,
                status,
                reason,
            } => {
                // Reasons quote the config, which others may have written.
                let reason = reason.as_deref().map(|r| self.mode.show(r).into_owned());
                self.update(&service, status, reason.as_deref())
            }
            other => {
                let mut text = Vec::new();
                let _ = write_event(&mut text, &other, self.paint, self.mode);
                let text = String::from_utf8_lossy(&text);
                let text = text.trim_end_matches('\n');
                match &self.live {
                    Some(live) => {
                        let _ = live.println(text);
                    }
                    None => eprintln!("{text}"),
                }
            }
        }
    }

    fn plan(&mut self, services: Vec<WaitedService>) {
        self.width = services.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for service in services {
            let bar = self.live.as_ref().map(|live| {
                let bar = live.add(ProgressBar::new_spinner());
                bar.set_prefix(format!("{:width$}", service.name, width = self.width));
                bar.set_style(working_style());
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(100));
                bar
            });
            self.line_of.insert(service.name.clone(), self.lines.len());
            self.lines.push(Line {
                service,
                bar,
                shown: None,
            });
        }
    }

    fn update(&mut self, name: &str, status: ServiceStatus, reason: Option<&str>) {
        let elapsed = self.started.elapsed();
        let paint = self.paint;
        let width = self.width;
        let Some(line) = self
            .line_of
            .get(name)
            .and_then(|&index| self.lines.get_mut(index))
        else {
            return;
        };
        let (mark, text) = describe(status, reason, line.service.healthcheck);
        if line.shown.as_ref() == Some(&(mark, text.clone())) {
            return;
        }
        match &line.bar {
            Some(bar) if mark == Mark::Working => {
                bar.set_style(working_style());
                bar.set_message(text.clone());
            }
            Some(bar) => {
                bar.set_style(settled_style());
                bar.set_message(settled_line(mark, name, width, &text, elapsed, paint));
            }
            None => eprintln!("{name} {text} ({})", seconds(elapsed)),
        }
        line.shown = Some((mark, text));
    }

    /// Ends the display: services still on their way keep their last text,
    /// marked as not ready. Safe to call twice.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        for line in &self.lines {
            let Some(bar) = &line.bar else { continue };
            let shown = line
                .shown
                .clone()
                .unwrap_or((Mark::Working, "starting".into()));
            if let (Mark::Working, text) = &shown {
                bar.set_style(settled_style());
                bar.set_message(settled_line(
                    Mark::Idle,
                    &line.service.name,
                    self.width,
                    text,
                    elapsed,
                    self.paint,
                ));
            }
            bar.finish();
        }
    }
}

impl Drop for StartupProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn working_style() -> ProgressStyle {
    // A line that wrapped could not be redrawn in place: the message is cut
    // to the terminal's width instead.
    ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {secs}")
        .expect("a valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
        .with_key(
            "secs",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&format!("({})", seconds(state.elapsed())));
            },
        )
}

fn settled_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg}").expect("a valid template")
}

/// `✔ db   healthy (1.2s)`, the mark in green or red with colour.
fn settled_line(
    mark: Mark,
    name: &str,
    width: usize,
    text: &str,
    elapsed: Duration,
    paint: Paint,
) -> String {
    let symbol = match mark {
        Mark::Ready => paint.paint(mark.symbol(), style::ready()),
        Mark::Failed => paint.paint(mark.symbol(), style::error()),
        _ => mark.symbol().to_string(),
    };
    format!("{symbol} {name:width$} {text} ({})", seconds(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_service_shows_what_it_waits_for() {
        assert_eq!(
            describe(
                ServiceStatus::Starting,
                Some("waiting for `db` to be healthy"),
                false
            ),
            (Mark::Working, "waiting for `db` to be healthy".into())
        );
        assert_eq!(
            describe(ServiceStatus::Starting, None, false),
            (Mark::Working, "starting".into())
        );
    }

    #[test]
    fn running_is_ready_unless_the_service_must_become_healthy() {
        assert_eq!(describe(ServiceStatus::Running, None, false).0, Mark::Ready);
        assert_eq!(
            describe(ServiceStatus::Running, None, true),
            (Mark::Working, "running, waiting to be healthy".into())
        );
        assert_eq!(
            describe(ServiceStatus::Healthy, None, true),
            (Mark::Ready, "healthy".into())
        );
    }

    #[test]
    fn exits_and_failures_say_how_they_ended() {
        assert_eq!(
            describe(ServiceStatus::Exited(0), None, false),
            (Mark::Ready, "exited (0)".into())
        );
        assert_eq!(
            describe(ServiceStatus::Exited(3), None, false),
            (Mark::Failed, "exited (3)".into())
        );
        assert_eq!(
            describe(ServiceStatus::Exited(3), Some("restarting in 1s"), false),
            (Mark::Working, "exited (3): restarting in 1s".into())
        );
        assert_eq!(
            describe(ServiceStatus::Failed, Some("no such program"), false),
            (Mark::Failed, "failed: no such program".into())
        );
    }

    #[test]
    fn a_settled_line_has_its_mark_name_column_text_and_time() {
        assert_eq!(
            settled_line(
                Mark::Ready,
                "db",
                5,
                "healthy",
                Duration::from_millis(1300),
                Paint::PLAIN
            ),
            "✔ db    healthy (1.3s)"
        );
    }
}
