//! Which stored lines a search keeps: a time window (`--since`, `--until`)
//! and a pattern (`--grep`). Readers apply it where they read, so a window
//! is found by binary search in each segment rather than by a scan, and
//! only matching lines leave the daemon.

use std::sync::Arc;

use kepler_protocol::{check_grep, LogFilter};
use regex::bytes::{Regex, RegexBuilder};

use super::forward::Window;

/// Compiled patterns past this size are refused (the crate's default is
/// 10 MiB; a search needs far less, and the client may be hostile).
const PATTERN_SIZE_LIMIT: usize = 1024 * 1024;

/// Why a search's pattern was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Longer than a client may send.
    #[error("{0}")]
    TooLong(String),
    /// Not a valid regular expression, or too large once compiled.
    #[error("--grep: {0}")]
    Pattern(#[from] regex::Error),
}

#[derive(Debug, Clone, Default)]
pub struct LineFilter {
    /// Lines stamped at or after this (Unix microseconds).
    pub since: Option<u64>,
    /// Lines stamped at or before this.
    pub until: Option<u64>,
    /// Lines whose bytes match this.
    pattern: Option<Arc<Regex>>,
}

impl LineFilter {
    /// Keeps every line.
    pub fn everything() -> LineFilter {
        LineFilter::default()
    }

    /// The filter a request asks for, its pattern compiled; a bad pattern
    /// is an error that shows where it is wrong.
    pub fn compile(filter: &LogFilter) -> Result<LineFilter, FilterError> {
        let pattern = match &filter.grep {
            None => None,
            Some(pattern) => {
                check_grep(pattern).map_err(FilterError::TooLong)?;
                let regex = RegexBuilder::new(pattern)
                    .case_insensitive(filter.ignore_case)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()?;
                Some(Arc::new(regex))
            }
        };
        Ok(LineFilter {
            since: filter.since_us,
            until: filter.until_us,
            pattern,
        })
    }

    /// Whether a line's text matches (every text without a pattern).
    pub fn matches(&self, payload: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.is_match(payload))
    }

    /// Whether a line stamped `timestamp_us` is inside the window.
    pub fn in_window(&self, timestamp_us: u64) -> bool {
        self.since.is_none_or(|since| timestamp_us >= since)
            && self.until.is_none_or(|until| timestamp_us <= until)
    }

    /// Whether it keeps the line.
    pub fn keeps(&self, timestamp_us: u64, payload: &[u8]) -> bool {
        self.in_window(timestamp_us) && self.matches(payload)
    }

    /// `window` narrowed to this filter's time window.
    pub(crate) fn narrow(&self, window: Window) -> Window {
        let after = match (window.after, self.since.and_then(|s| s.checked_sub(1))) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Window {
            after,
            until: window.until.min(self.until.unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(grep: Option<&str>, ignore_case: bool) -> LineFilter {
        LineFilter::compile(&LogFilter {
            since_us: Some(100),
            until_us: Some(200),
            grep: grep.map(String::from),
            ignore_case,
        })
        .unwrap()
    }

    #[test]
    fn a_filter_keeps_lines_in_its_window_that_match_its_pattern() {
        let filter = compiled(Some("err(or)?"), false);
        assert!(filter.keeps(100, b"an error"));
        assert!(filter.keeps(200, b"err"));
        assert!(!filter.keeps(99, b"error"));
        assert!(!filter.keeps(201, b"error"));
        assert!(!filter.keeps(150, b"ERROR"));
        assert!(compiled(Some("err(or)?"), true).keeps(150, b"ERROR"));
        // Bytes that are not UTF-8 are searched too.
        assert!(filter.keeps(150, b"\xff error \xfe"));
        assert!(LineFilter::everything().keeps(0, b""));
    }

    #[test]
    fn a_window_is_narrowed_to_the_filters_bounds() {
        let filter = compiled(None, false);
        let narrowed = filter.narrow(Window {
            after: None,
            until: u64::MAX,
        });
        assert_eq!((narrowed.after, narrowed.until), (Some(99), 200));
        let narrowed = filter.narrow(Window {
            after: Some(150),
            until: 180,
        });
        assert_eq!((narrowed.after, narrowed.until), (Some(150), 180));
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused_saying_why() {
        let bad = LineFilter::compile(&LogFilter {
            grep: Some("(unclosed".into()),
            ..Default::default()
        })
        .unwrap_err();
        let bad = bad.to_string();
        assert!(bad.starts_with("--grep: "), "{bad}");
        assert!(bad.contains("unclosed"), "{bad}");
        let huge = LineFilter::compile(&LogFilter {
            grep: Some("a".repeat(kepler_protocol::MAX_GREP_LEN + 1)),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(huge, FilterError::TooLong(_)), "{huge}");
        // Small to write, large once compiled.
        let blowup = LineFilter::compile(&LogFilter {
            grep: Some(r"\w{1000}\w{1000}".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(blowup.to_string().contains("size limit"), "{blowup}");
    }
}
