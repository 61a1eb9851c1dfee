//! How events pushed by the daemon look: a service's output as
//! `web | line` (`web[pre_start] | line` for a hook), and state changes and
//! progress as dim `kepler | ...` lines.
//!
//! With colour, each service's name has its own colour and the bar of a line
//! the service wrote to stderr is red. Rendering is pure, so tests can pin it.
//! What services wrote, and reasons that quote their config, go through
//! [`TextMode`]: on a terminal, control characters are shown, never sent.

use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use kepler_protocol::{Event, LogLine, ServiceStatus};

use crate::style::{self, Paint};
use crate::terminal_text::{write_text, TextMode};

/// The prefix of lines that come from Kepler rather than from a service.
const KEPLER_PREFIX: &str = "kepler";

/// Writes the event as lines of text, each ending in a newline.
pub fn write_event(
    out: &mut impl Write,
    event: &Event,
    paint: Paint,
    mode: TextMode,
) -> io::Result<()> {
    match event {
        Event::Log(line) => write_log_line(out, line, paint, mode),
        Event::Logs(lines) => lines
            .iter()
            .try_for_each(|line| write_log_line(out, line, paint, mode)),
        Event::ServiceState {
            service,
            status,
            reason,
        } => {
            let reason = reason.as_deref().map(|r| mode.show(r));
            writeln!(
                out,
                "{}",
                render_state(service, *status, reason.as_deref(), paint)
            )
        }
        Event::Progress { message } => {
            let line = format!("{KEPLER_PREFIX} | {}", mode.show(message));
            writeln!(out, "{}", paint.paint(&line, style::dim()))
        }
        Event::StartupPlan { services } => {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            let line = format!("{KEPLER_PREFIX} | waiting for {}", names.join(", "));
            writeln!(out, "{}", paint.paint(&line, style::dim()))
        }
        // Frames of `kepler top` are drawn by its own screen.
        Event::Top(_) => Ok(()),
        // Only `ps` asks for these, and shows them as a table.
        Event::PsPart(_) => Ok(()),
    }
}

/// The event as lines of text (without the final newline), as it would be
/// written to a pipe.
#[cfg(test)]
pub fn render_event(event: &Event, paint: Paint) -> String {
    let mut out = Vec::new();
    write_event(&mut out, event, paint, TextMode::Plain).expect("writing to a Vec cannot fail");
    out.pop(); // the last newline
    String::from_utf8(out).expect("text written lossily is UTF-8")
}

/// Writes the event to stdout as [`write_event`] shows it.
pub fn print_event(event: &Event, paint: Paint, mode: TextMode) -> io::Result<()> {
    write_event(&mut io::stdout().lock(), event, paint, mode)
}

/// `service | text`, once per line if the bytes hold several, after the
/// line's time when its service asks for it (`logs.timestamp`).
fn write_log_line(
    out: &mut impl Write,
    line: &LogLine,
    paint: Paint,
    mode: TextMode,
) -> io::Result<()> {
    let prefix = line_prefix(&line.service, line.hook.as_deref(), line.stderr, paint);
    let stamp = line.show_time.then(|| log_time(line.timestamp_us));
    write_log_text(out, stamp.as_deref(), &prefix, &line.bytes, mode)
}

/// Writes `prefix text` and a newline once per line that `bytes` holds (a
/// trailing newline only ends the last one), each after `stamp` and a space
/// when given. The text is written as `mode` says; unless raw, a trailing
/// `\r` is dropped. No intermediate string for the common valid line.
pub fn write_log_text(
    out: &mut impl Write,
    stamp: Option<&str>,
    prefix: &str,
    bytes: &[u8],
    mode: TextMode,
) -> io::Result<()> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut write_part = |part: &[u8]| -> io::Result<()> {
        if let Some(stamp) = stamp {
            out.write_all(stamp.as_bytes())?;
            out.write_all(b" ")?;
        }
        out.write_all(prefix.as_bytes())?;
        let part = match mode {
            TextMode::Raw => part,
            TextMode::Plain | TextMode::Terminal => part.strip_suffix(b"\r").unwrap_or(part),
        };
        write_text(out, part, mode)?;
        out.write_all(b"\n")
    };
    // Stored lines never hold `\n`; lines pushed live may.
    if !bytes.contains(&b'\n') {
        return write_part(bytes);
    }
    bytes.split(|&b| b == b'\n').try_for_each(write_part)
}

/// A line's stored time as shown before it: RFC 3339 in UTC with
/// microseconds, e.g. `2026-11-23T18:19:25.123456Z`.
pub fn log_time(micros: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(micros)).to_string()
}

/// What comes before the text of a line: `web | `, `db[pre_start] | `; with
/// colour, the name in the service's colour and a red bar for stderr.
pub fn line_prefix(service: &str, hook: Option<&str>, stderr: bool, paint: Paint) -> String {
    let service_style = style::service_style(service);
    let mut prefix = paint.paint(service, service_style);
    if let Some(hook) = hook {
        prefix.push_str(&paint.paint(&format!("[{hook}]"), style::dim()));
    }
    let bar_style = if stderr {
        style::error()
    } else {
        service_style
    };
    prefix.push(' ');
    prefix.push_str(&paint.paint("|", bar_style));
    prefix.push(' ');
    prefix
}

/// What a note of Kepler's says, without the `kepler | ` before it (for
/// JSON, where it is a line of the service `kepler`); `None` for output.
pub fn note_text(event: &Event) -> Option<String> {
    match event {
        Event::Log(_) | Event::Logs(_) | Event::PsPart(_) => None,
        Event::ServiceState {
            service,
            status,
            reason,
        } => Some(match reason {
            Some(reason) => format!("{service} {}: {reason}", status.name()),
            None => format!("{service} {}", status.name()),
        }),
        Event::Progress { message } => Some(message.clone()),
        Event::StartupPlan { services } => {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            Some(format!("waiting for {}", names.join(", ")))
        }
        Event::Top(_) => None,
    }
}

/// `kepler | web exited (1)`, or `kepler | web failed: why` with a reason.
fn render_state(
    service: &str,
    status: ServiceStatus,
    reason: Option<&str>,
    paint: Paint,
) -> String {
    let head = paint.paint(&format!("{KEPLER_PREFIX} | {service}"), style::dim());
    let status_style = if style::went_wrong(status) {
        style::error()
    } else {
        style::dim()
    };
    let mut tail = status.name();
    if let Some(reason) = reason {
        tail = format!("{tail}: {reason}");
    }
    format!("{head} {}", paint.paint(&tail, status_style))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(service: &str, hook: Option<&str>, stderr: bool, bytes: &[u8]) -> Event {
        Event::Log(LogLine {
            service: service.into(),
            hook: hook.map(Into::into),
            stderr,
            show_time: false,
            replica: None,
            timestamp_us: 0,
            bytes: bytes.to_vec(),
        })
    }

    #[test]
    fn a_line_of_a_service_that_asks_for_timestamps_starts_with_its_time() {
        let line = Event::Log(LogLine {
            service: "web".into(),
            hook: None,
            stderr: false,
            show_time: true,
            replica: None,
            timestamp_us: 1_000_000_000_123_456,
            bytes: b"one\ntwo".to_vec(),
        });
        assert_eq!(
            render_event(&line, Paint::PLAIN),
            "2001-09-09T01:46:40.123456Z web | one\n2001-09-09T01:46:40.123456Z web | two"
        );
    }

    #[test]
    fn a_log_line_is_prefixed_with_its_service() {
        let line = log("web", None, false, b"listening on :8080");
        assert_eq!(
            render_event(&line, Paint::PLAIN),
            "web | listening on :8080"
        );
    }

    #[test]
    fn stderr_lines_look_the_same_without_colour() {
        let line = log("web", None, true, b"warning: slow\n");
        assert_eq!(render_event(&line, Paint::PLAIN), "web | warning: slow");
    }

    #[test]
    fn a_hook_line_names_the_hook_after_the_service() {
        let line = log("db", Some("pre_start"), false, b"migrating");
        assert_eq!(
            render_event(&line, Paint::PLAIN),
            "db[pre_start] | migrating"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_lossily() {
        let line = log("web", None, false, b"caf\xe9\r\n");
        assert_eq!(render_event(&line, Paint::PLAIN), "web | caf\u{fffd}");
    }

    #[test]
    fn several_lines_in_one_event_each_get_the_prefix() {
        let line = log("web", None, false, b"one\ntwo\n");
        assert_eq!(render_event(&line, Paint::PLAIN), "web | one\nweb | two");
    }

    #[test]
    fn with_colour_the_prefix_has_the_service_colour_and_the_text_does_not() {
        let line = log("web", None, false, b"hello");
        let painted = render_event(&line, Paint::COLOUR);
        let name = Paint::COLOUR.paint("web", style::service_style("web"));
        let bar = Paint::COLOUR.paint("|", style::service_style("web"));
        assert_eq!(painted, format!("{name} {bar} hello"));
        assert_ne!(name, "web");
    }

    #[test]
    fn with_colour_a_stderr_line_has_a_red_bar() {
        let line = log("web", None, true, b"oops");
        let painted = render_event(&line, Paint::COLOUR);
        assert!(
            painted.contains(&Paint::COLOUR.paint("|", style::error())),
            "{painted:?}"
        );
    }

    #[test]
    fn services_with_different_colours_get_different_prefixes() {
        let other = ["db", "cache", "worker", "api", "queue"]
            .into_iter()
            .find(|name| style::service_style(name) != style::service_style("web"))
            .expect("the palette has more than one colour");
        let web = render_event(&log("web", None, false, b"x"), Paint::COLOUR);
        let them = render_event(&log(other, None, false, b"x"), Paint::COLOUR);
        assert_ne!(web.replace("web", ""), them.replace(other, ""));
    }

    #[test]
    fn a_state_change_is_a_short_kepler_line() {
        let event = Event::ServiceState {
            service: "web".into(),
            status: ServiceStatus::Exited(1),
            reason: None,
        };
        assert_eq!(
            render_event(&event, Paint::PLAIN),
            "kepler | web exited (1)"
        );
        let event = Event::ServiceState {
            service: "api".into(),
            status: ServiceStatus::Failed,
            reason: Some("dependency db failed".into()),
        };
        assert_eq!(
            render_event(&event, Paint::PLAIN),
            "kepler | api failed: dependency db failed"
        );
    }

    #[test]
    fn on_a_terminal_what_others_wrote_is_shown_not_sent() {
        let written = |event: &Event| {
            let mut out = Vec::new();
            write_event(&mut out, event, Paint::PLAIN, TextMode::Terminal).unwrap();
            String::from_utf8(out).unwrap()
        };
        let line = log("web", None, false, b"\x1b]0;owned\x07hi\r\n");
        assert_eq!(written(&line), "web | \\x1b]0;owned\\x07hi\n");
        let state = Event::ServiceState {
            service: "web".into(),
            status: ServiceStatus::Failed,
            reason: Some("cannot start `\x1b[2J`".into()),
        };
        assert_eq!(
            written(&state),
            "kepler | web failed: cannot start `\\x1b[2J`\n"
        );
    }

    #[test]
    fn raw_keeps_every_byte_but_still_prefixes_each_line() {
        let mut out = Vec::new();
        let line = log("web", None, false, b"\x1b[1m\xff\r\nnext");
        write_event(&mut out, &line, Paint::PLAIN, TextMode::Raw).unwrap();
        assert_eq!(out, b"web | \x1b[1m\xff\r\nweb | next\n");
    }

    #[test]
    fn progress_is_a_kepler_line() {
        let event = Event::Progress {
            message: "baking kepler.yaml".into(),
        };
        assert_eq!(
            render_event(&event, Paint::PLAIN),
            "kepler | baking kepler.yaml"
        );
        assert!(render_event(&event, Paint::COLOUR).starts_with('\x1b'));
    }
}
