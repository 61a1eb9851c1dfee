//! `--since` and `--until`: a duration meaning that long ago (`10m`,
//! `1h30m`), or a moment in RFC 3339 (`2026-11-23T18:00:00Z`, or with an
//! offset, `2026-11-23T19:00:00+01:00`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::duration::parse_duration;

/// A bound of a log search, before it is fixed to a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// That long before the command runs.
    Ago(Duration),
    /// Microseconds since the Unix epoch.
    At(u64),
}

impl TimeBound {
    /// The bound in microseconds since the epoch, `now_us` being now.
    pub fn resolve(self, now_us: u64) -> u64 {
        match self {
            TimeBound::Ago(ago) => {
                now_us.saturating_sub(u64::try_from(ago.as_micros()).unwrap_or(u64::MAX))
            }
            TimeBound::At(at) => at,
        }
    }
}

/// Now, in microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Parses `10m` or `2026-11-23T18:00:00Z`; the error names the value and
/// shows both forms.
pub fn parse_time_bound(text: &str) -> Result<TimeBound, String> {
    let text = text.trim();
    // A date has dashes before anything else a duration could hold.
    if text.len() > 4 && text.as_bytes()[4] == b'-' {
        let at: jiff::Timestamp = text.parse().map_err(|e| {
            format!(
                "'{text}' is not an RFC 3339 time ({e}); write e.g. 2026-11-23T18:00:00Z or \
                 2026-11-23T19:00:00+01:00, or a duration such as 10m"
            )
        })?;
        return u64::try_from(at.as_microsecond())
            .map(TimeBound::At)
            .map_err(|_| format!("'{text}' is before 1970"));
    }
    parse_duration(text).map(TimeBound::Ago).map_err(|_| {
        format!(
            "'{text}' is neither a duration (e.g. 30s, 10m, 1h30m, 2d) nor an RFC 3339 time \
             (e.g. 2026-11-23T18:00:00Z)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_is_that_long_before_now() {
        let bound = parse_time_bound("10m").unwrap();
        assert_eq!(bound, TimeBound::Ago(Duration::from_secs(600)));
        assert_eq!(bound.resolve(1_000_000_000), 1_000_000_000 - 600_000_000);
        assert_eq!(parse_time_bound("1h30m").unwrap().resolve(0), 0);
    }

    #[test]
    fn rfc3339_times_with_z_or_an_offset_and_fractions() {
        let at = |text: &str| match parse_time_bound(text).unwrap() {
            TimeBound::At(us) => us,
            other => panic!("{other:?}"),
        };
        assert_eq!(at("2001-09-09T01:46:40Z"), 1_000_000_000_000_000);
        assert_eq!(at("2001-09-09T01:46:40.123456Z"), 1_000_000_000_123_456);
        assert_eq!(at("2001-09-09T03:46:40+02:00"), 1_000_000_000_000_000);
    }

    #[test]
    fn bad_bounds_name_the_value_and_both_forms() {
        for text in ["soon", "10", "2026-13-01T00:00:00Z", "2026-11-23T18:00:00"] {
            let err = parse_time_bound(text).unwrap_err();
            assert!(err.contains(text), "{err}");
            assert!(err.contains("RFC 3339"), "{err}");
        }
        assert!(parse_time_bound("1960-01-01T00:00:00Z")
            .unwrap_err()
            .contains("before 1970"));
    }
}
