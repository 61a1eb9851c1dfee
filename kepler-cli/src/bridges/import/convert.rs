//! Value conversions every format needs: durations, signals, service names,
//! paths relative to the new config, and text that Kepler would expand.

use std::path::{Component, Path, PathBuf};

/// Kepler expands `$` in `environment`, `working_dir` and `user`; a source
/// that took these values literally needs its `$` doubled.
pub fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// Milliseconds in Kepler's duration form: `90s`, `1500ms`.
pub fn duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub fn duration_secs(secs: u64) -> String {
    format!("{secs}s")
}

/// A Go duration as Docker Compose writes them (`1m30s`, `1.5s`, `500ms`,
/// `2h`), or a bare number of seconds; in milliseconds.
pub fn go_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * factor;
    }
    // Kepler counts whole milliseconds; round up so nothing becomes 0.
    Some(total.ceil() as u64)
}

/// A signal as Kepler writes it (`SIGTERM`), from a name with or without
/// `SIG` or a number. `None` for what is not a signal.
pub fn signal_name(text: &str) -> Option<String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .ok()
            .map(|s| s.as_str().to_owned());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s.as_str().to_owned())
}

/// A valid Kepler service name for `raw`: 1-63 characters, first a letter
/// or digit, then letters, digits, `_`, `.` or `-`.
pub fn service_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = name
        .find(|c: char| c.is_ascii_alphanumeric())
        .unwrap_or(name.len());
    name.drain(..start);
    if name.is_empty() {
        name.push_str("service");
    }
    name.truncate(60);
    name
}

/// Where the new config lives relative to the source, for relative paths.
pub struct Paths {
    /// Directory of the source file (absolute).
    pub source_dir: PathBuf,
    /// Directory the kepler.yaml goes to (absolute).
    pub output_dir: PathBuf,
}

impl Paths {
    /// A path written relative to the source's directory, as the new config
    /// should write it: unchanged when the config sits beside the source,
    /// absolute otherwise.
    pub fn rebase(&self, written: &str) -> String {
        if Path::new(written).is_absolute() || self.source_dir == self.output_dir {
            return written.to_owned();
        }
        normalize(&self.source_dir.join(written))
            .display()
            .to_string()
    }

    /// A path relative to the new config's directory for a file that sits
    /// beside the source (an `.env`).
    pub fn beside_source(&self, file_name: &str) -> String {
        self.rebase(file_name)
    }
}

/// `.` and `..` resolved on the text.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A size as supervisord or pm2 writes it (`50MB`, `1GB`, `1024`) in
/// Kepler's form; `None` when it is not a size.
pub fn size(text: &str) -> Option<String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit = match text[digits..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => "",
        "K" | "KB" => "K",
        "M" | "MB" => "M",
        "G" | "GB" => "G",
        _ => return None,
    };
    Some(format!("{number}{unit}"))
}

/// Parses the boolean spellings supervisord and YAML accept.
pub fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_become_milliseconds() {
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("1.5s"), Some(1500));
        assert_eq!(go_duration_ms("500ms"), Some(500));
        assert_eq!(go_duration_ms("10"), Some(10_000));
        assert_eq!(go_duration_ms("2h"), Some(7_200_000));
        assert_eq!(go_duration_ms("soon"), None);
        assert_eq!(duration_ms(90_000), "90s");
        assert_eq!(duration_ms(1500), "1500ms");
    }

    #[test]
    fn signals_and_names_are_normalised() {
        assert_eq!(signal_name("TERM").as_deref(), Some("SIGTERM"));
        assert_eq!(signal_name("15").as_deref(), Some("SIGTERM"));
        assert_eq!(signal_name("sigint").as_deref(), Some("SIGINT"));
        assert_eq!(signal_name("NOPE"), None);
        assert_eq!(service_name("web"), "web");
        assert_eq!(service_name("my app:1"), "my-app-1");
        assert_eq!(service_name("_x"), "x");
    }

    #[test]
    fn paths_are_rebased_only_when_the_config_moves() {
        let beside = Paths {
            source_dir: "/srv/app".into(),
            output_dir: "/srv/app".into(),
        };
        assert_eq!(beside.rebase("./web"), "./web");
        let elsewhere = Paths {
            source_dir: "/srv/app".into(),
            output_dir: "/tmp".into(),
        };
        assert_eq!(elsewhere.rebase("./web"), "/srv/app/web");
        assert_eq!(elsewhere.rebase("/abs"), "/abs");
    }
}
