//! How `kepler logs` and attached `start`/`run` write lines: as text
//! (`web | line`, the default), as the services' bytes only (`--raw`), or
//! as one JSON object per line (`--json`).
//!
//! JSON lines have `time` (RFC 3339, UTC, microseconds), `service`,
//! `replica` (for an instance of a replicated service, whose `service` is
//! then the replicated one; the daemon says which origins are instances),
//! `stream` (`stdout`
//! or `stderr`), `hook` (when a hook wrote it) and `line` (the text, made
//! valid UTF-8). Kepler's own notes (state changes, progress) are lines of
//! the service `kepler` in JSON and are left out of `--raw`, which holds
//! nothing but what services and hooks wrote.

use std::io::{self, Write};
use std::time::SystemTime;

use kepler_protocol::{Event, LogBatch, LogLine};
use serde::Serialize;

use crate::event_output::{line_prefix, log_time, note_text, write_event, write_log_text};
use crate::style::Paint;
use crate::terminal_text::TextMode;

/// The service name Kepler's own notes carry in JSON.
const KEPLER_SERVICE: &str = "kepler";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `service | text`, coloured on a terminal; `timestamps` puts every
    /// line's time before it (otherwise only where its service asks).
    Text {
        paint: Paint,
        mode: TextMode,
        timestamps: bool,
    },
    /// What services wrote, byte for byte, one line each.
    Raw,
    /// One JSON object per line.
    Json,
}

impl LineFormat {
    /// The format the flags ask for, on stdout.
    pub fn for_stdout(raw: bool, json: bool, timestamps: bool) -> LineFormat {
        if json {
            LineFormat::Json
        } else if raw {
            LineFormat::Raw
        } else {
            LineFormat::Text {
                paint: Paint::for_stdout(),
                mode: TextMode::for_stdout(false),
                timestamps,
            }
        }
    }
}

/// The service JSON names for an origin: the replicated service for one of
/// its instances (`web` for `web.2`, instance 2), else the origin's name.
fn json_service(service: &str, replica: Option<u32>) -> &str {
    replica
        .and_then(|i| service.strip_suffix(&format!(".{i}")))
        .unwrap_or(service)
}

/// One line as JSON, fields in this order.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    replica: Option<u32>,
    stream: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hook: Option<&'a str>,
    line: &'a str,
}

impl LineFormat {
    /// Writes a page of stored lines; what each origin needs is worked out
    /// once per page.
    pub fn write_batch(self, out: &mut impl Write, batch: &LogBatch) -> io::Result<()> {
        match self {
            LineFormat::Text {
                paint,
                mode,
                timestamps,
            } => {
                let prefixes: Vec<String> = batch
                    .sources()
                    .iter()
                    .map(|s| line_prefix(&s.service, s.hook.as_deref(), s.stderr, paint))
                    .collect();
                for line in batch {
                    let prefix = &prefixes[line.source_id as usize];
                    let stamp =
                        (timestamps || line.source.show_time).then(|| log_time(line.timestamp_us));
                    write_log_text(out, stamp.as_deref(), prefix, line.bytes, mode)?;
                }
                Ok(())
            }
            LineFormat::Raw => batch.iter().try_for_each(|line| write_raw(out, line.bytes)),
            LineFormat::Json => {
                for line in batch {
                    let source = line.source;
                    write_json(
                        out,
                        line.timestamp_us,
                        json_service(&source.service, source.replica),
                        source.replica,
                        source.stderr,
                        source.hook.as_deref(),
                        line.bytes,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Writes one line pushed live (it may hold several, split at `\n`).
    pub fn write_line(self, out: &mut impl Write, line: &LogLine) -> io::Result<()> {
        match self {
            LineFormat::Text {
                paint,
                mode,
                timestamps,
            } => {
                let prefix = line_prefix(&line.service, line.hook.as_deref(), line.stderr, paint);
                let stamp = (timestamps || line.show_time).then(|| log_time(line.timestamp_us));
                write_log_text(out, stamp.as_deref(), &prefix, &line.bytes, mode)
            }
            LineFormat::Raw => write_raw(out, &line.bytes),
            LineFormat::Json => {
                let bytes = line.bytes.strip_suffix(b"\n").unwrap_or(&line.bytes);
                bytes.split(|&b| b == b'\n').try_for_each(|part| {
                    write_json(
                        out,
                        line.timestamp_us,
                        json_service(&line.service, line.replica),
                        line.replica,
                        line.stderr,
                        line.hook.as_deref(),
                        part,
                    )
                })
            }
        }
    }

    /// Writes an event the daemon pushed: output lines, and Kepler's notes
    /// (left out of `--raw`).
    pub fn write_event(self, out: &mut impl Write, event: &Event) -> io::Result<()> {
        match (self, event) {
            (_, Event::Log(line)) => self.write_line(out, line),
            (_, Event::Logs(lines)) => lines.iter().try_for_each(|l| self.write_line(out, l)),
            (LineFormat::Text { paint, mode, .. }, note) => write_event(out, note, paint, mode),
            (LineFormat::Raw, _) => Ok(()),
            (LineFormat::Json, note) => {
                let Some(text) = note_text(note) else {
                    return Ok(());
                };
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                text.lines().try_for_each(|line| {
                    write_json(out, now, KEPLER_SERVICE, None, false, None, line.as_bytes())
                })
            }
        }
    }
}

/// The bytes and a newline (stored lines lost theirs; a live line may
/// still have it).
fn write_raw(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn write_json(
    out: &mut impl Write,
    timestamp_us: u64,
    service: &str,
    replica: Option<u32>,
    stderr: bool,
    hook: Option<&str>,
    bytes: &[u8],
) -> io::Result<()> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let text = String::from_utf8_lossy(bytes);
    let line = JsonLine {
        time: &log_time(timestamp_us),
        service,
        replica,
        stream: if stderr { "stderr" } else { "stdout" },
        hook,
        line: &text,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use kepler_protocol::ServiceStatus;

    use super::*;

    fn line(service: &str, hook: Option<&str>, stderr: bool, bytes: &[u8]) -> LogLine {
        LogLine {
            service: service.into(),
            hook: hook.map(String::from),
            stderr,
            show_time: false,
            replica: None,
            timestamp_us: 1_000_000_000_123_456,
            bytes: bytes.to_vec(),
        }
    }

    fn written(format: LineFormat, write: impl Fn(LineFormat, &mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_carry_time_service_stream_hook_and_line() {
        let batch: LogBatch = [
            line("web", None, false, b"listening\r"),
            line("db", Some("pre_start"), true, b"caf\xe9 \"quoted\""),
        ]
        .into_iter()
        .collect();
        let text = written(LineFormat::Json, |f, out| {
            f.write_batch(out, &batch).unwrap()
        });
        assert_eq!(
            text,
            "{\"time\":\"2001-09-09T01:46:40.123456Z\",\"service\":\"web\",\"stream\":\"stdout\",\"line\":\"listening\"}\n\
             {\"time\":\"2001-09-09T01:46:40.123456Z\",\"service\":\"db\",\"stream\":\"stderr\",\"hook\":\"pre_start\",\"line\":\"caf\u{fffd} \\\"quoted\\\"\"}\n"
        );
    }

    #[test]
    fn a_live_line_holding_several_is_one_object_each() {
        let text = written(LineFormat::Json, |f, out| {
            f.write_line(out, &line("web", None, false, b"one\ntwo\n"))
                .unwrap()
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["line"], "one");
        assert_eq!(lines[1]["line"], "two");
    }

    #[test]
    fn kepler_notes_are_lines_of_the_service_kepler_in_json_and_absent_from_raw() {
        let note = Event::ServiceState {
            service: "web".into(),
            status: ServiceStatus::Exited(1),
            reason: None,
        };
        let text = written(LineFormat::Json, |f, out| {
            f.write_event(out, &note).unwrap()
        });
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["service"], "kepler");
        assert_eq!(value["line"], "web exited (1)");
        assert_eq!(value["stream"], "stdout");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            written(LineFormat::Raw, |f, out| f.write_event(out, &note).unwrap()),
            ""
        );
    }

    #[test]
    fn raw_is_the_bytes_and_a_newline_without_prefix_or_escaping() {
        let batch: LogBatch = [
            line("web", None, false, b"\x1b[31mred\x1b[0m\r"),
            line("db", Some("pre_start"), true, b"caf\xe9"),
        ]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        LineFormat::Raw.write_batch(&mut out, &batch).unwrap();
        assert_eq!(out, b"\x1b[31mred\x1b[0m\r\ncaf\xe9\n");
        let mut out = Vec::new();
        LineFormat::Raw
            .write_event(&mut out, &Event::Log(line("web", None, false, b"live\n")))
            .unwrap();
        assert_eq!(out, b"live\n");
    }

    #[test]
    fn text_is_prefixed_and_timestamped_when_asked() {
        let format = LineFormat::Text {
            paint: Paint::PLAIN,
            mode: TextMode::Plain,
            timestamps: true,
        };
        let text = written(format, |f, out| {
            f.write_line(out, &line("web", None, false, b"hello"))
                .unwrap()
        });
        assert_eq!(text, "2001-09-09T01:46:40.123456Z web | hello\n");
    }

    #[test]
    fn a_text_page_prints_each_line_with_its_origin_lossily_and_the_time_where_its_service_asks() {
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
                replica: None,
                timestamp_us: 0,
                bytes: bytes.to_vec(),
            })
            .collect();
        let format = LineFormat::Text {
            paint: Paint::PLAIN,
            mode: TextMode::Plain,
            timestamps: false,
        };
        let text = written(format, |f, out| f.write_batch(out, &batch).unwrap());
        assert_eq!(
            text,
            "web | up\n1970-01-01T00:00:00.000000Z db[pre_start] | migrating\nweb | caf\u{fffd}\n\
             web | one\nweb | two\n"
        );
    }

    #[test]
    fn an_instance_of_a_replicated_service_is_its_service_and_replica_in_json() {
        let mut instance = line("web.2", None, false, b"hello");
        instance.replica = Some(2);
        let batch: LogBatch = [instance.clone(), line("db.1", None, false, b"plain")]
            .into_iter()
            .collect();
        let text = written(LineFormat::Json, |f, out| {
            f.write_batch(out, &batch).unwrap()
        });
        let values: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(values[0]["service"], "web");
        assert_eq!(values[0]["replica"], 2);
        // A service named with a dot that is no instance keeps its name.
        assert_eq!(values[1]["service"], "db.1");
        assert!(values[1].get("replica").is_none());
        let text = written(LineFormat::Json, |f, out| {
            f.write_line(out, &instance).unwrap()
        });
        assert!(
            text.contains("\"service\":\"web\",\"replica\":2,"),
            "{text}"
        );
    }
}
