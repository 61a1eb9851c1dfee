//! Many log lines in one compact value, for pages of a whole-log read.
//!
//! A page can hold tens of thousands of lines. Sent as a `Vec<LogLine>`,
//! each line costs two allocations and a few serde calls on either side,
//! which dominated printing a large log. A batch instead names each distinct
//! origin once ([`LogSource`]), keeps every line's text in one byte string,
//! and gives each line a fixed 16-byte entry in a second one: decoding a page
//! is two buffer copies, whatever its line count.
//!
//! Entries are `source: u32, timestamp_us: u64, len: u32`, little-endian;
//! the texts follow each other in `text` in entry order. A batch is checked
//! when it is decoded, so iterating one never goes out of bounds.

use serde::{Deserialize, Serialize};

use crate::LogLine;

const ENTRY_LEN: usize = 16;

/// Where lines come from: a service's stdout or stderr, written by the
/// service itself or by one of its hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSource {
    pub service: String,
    /// The hook that wrote the lines, when it was not the service itself.
    pub hook: Option<String>,
    pub stderr: bool,
    /// The service asks for its lines to be shown with their time
    /// (`logs.timestamp: true`); one flag per origin costs nothing per line.
    pub show_time: bool,
    /// The instance number, when `service` is an instance of a replicated
    /// service (`web.2` is instance 2 of `web`).
    pub replica: Option<u32>,
}

/// Log lines, oldest first (see the module docs for the layout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct LogBatch {
    sources: Vec<LogSource>,
    #[serde(with = "serde_bytes")]
    entries: Vec<u8>,
    #[serde(with = "serde_bytes")]
    text: Vec<u8>,
}

/// One line of a batch, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLineRef<'a> {
    pub source: &'a LogSource,
    /// Index of `source` in the batch, for callers that cache per source.
    pub source_id: u32,
    pub timestamp_us: u64,
    pub bytes: &'a [u8],
}

impl LogBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `lines` lines of `text_bytes` in all.
    pub fn with_capacity(lines: usize, text_bytes: usize) -> Self {
        LogBatch {
            sources: Vec::new(),
            entries: Vec::with_capacity(lines.saturating_mul(ENTRY_LEN)),
            text: Vec::with_capacity(text_bytes),
        }
    }

    /// Registers an origin and returns its id for [`push_line`](Self::push_line).
    /// Callers that add many lines keep the id instead of looking it up.
    pub fn add_source(&mut self, source: LogSource) -> u32 {
        self.sources.push(source);
        (self.sources.len() - 1) as u32
    }

    /// Adds a line of an origin returned by [`add_source`](Self::add_source).
    pub fn push_line(&mut self, source_id: u32, timestamp_us: u64, bytes: &[u8]) {
        assert!(
            (source_id as usize) < self.sources.len(),
            "unknown log source"
        );
        self.entries.extend_from_slice(&source_id.to_le_bytes());
        self.entries.extend_from_slice(&timestamp_us.to_le_bytes());
        self.entries.extend_from_slice(
            &u32::try_from(bytes.len())
                .expect("a log line under 4 GiB")
                .to_le_bytes(),
        );
        self.text.extend_from_slice(bytes);
    }

    /// Adds a line, finding or registering its origin (a linear search over
    /// the origins: fine for the few a page has).
    pub fn push(&mut self, line: &LogLine) {
        let id = match self.sources.iter().position(|s| {
            s.service == line.service
                && s.hook == line.hook
                && s.stderr == line.stderr
                && s.show_time == line.show_time
                && s.replica == line.replica
        }) {
            Some(id) => id as u32,
            None => self.add_source(LogSource {
                service: line.service.clone(),
                hook: line.hook.clone(),
                stderr: line.stderr,
                show_time: line.show_time,
                replica: line.replica,
            }),
        };
        self.push_line(id, line.timestamp_us, &line.bytes);
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of line text held (what a page's size is judged by).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    pub fn sources(&self) -> &[LogSource] {
        &self.sources
    }

    /// Sets each origin's [`LogSource::show_time`] from its service.
    pub fn mark_show_time(&mut self, show_time: impl Fn(&str) -> bool) {
        for source in &mut self.sources {
            source.show_time = show_time(&source.service);
        }
    }

    /// Sets each origin's [`LogSource::replica`] from its service.
    pub fn mark_replicas(&mut self, replica: impl Fn(&str) -> Option<u32>) {
        for source in &mut self.sources {
            source.replica = replica(&source.service);
        }
    }

    pub fn iter(&self) -> Lines<'_> {
        Lines {
            batch: self,
            entry: 0,
            text: 0,
        }
    }

    /// The lines as owned values (for tests and small batches).
    pub fn to_lines(&self) -> Vec<LogLine> {
        self.iter()
            .map(|line| LogLine {
                service: line.source.service.clone(),
                hook: line.source.hook.clone(),
                stderr: line.source.stderr,
                show_time: line.source.show_time,
                replica: line.source.replica,
                timestamp_us: line.timestamp_us,
                bytes: line.bytes.to_vec(),
            })
            .collect()
    }
}

impl FromIterator<LogLine> for LogBatch {
    fn from_iter<I: IntoIterator<Item = LogLine>>(lines: I) -> Self {
        let mut batch = LogBatch::new();
        for line in lines {
            batch.push(&line);
        }
        batch
    }
}

impl<'a> IntoIterator for &'a LogBatch {
    type Item = LogLineRef<'a>;
    type IntoIter = Lines<'a>;

    fn into_iter(self) -> Lines<'a> {
        self.iter()
    }
}

/// The lines of a batch in order.
pub struct Lines<'a> {
    batch: &'a LogBatch,
    entry: usize,
    text: usize,
}

fn entry_fields(entry: &[u8]) -> (u32, u64, usize) {
    let source = u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes"));
    let timestamp = u64::from_le_bytes(entry[4..12].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(entry[12..16].try_into().expect("4 bytes"));
    (source, timestamp, len as usize)
}

impl<'a> Iterator for Lines<'a> {
    type Item = LogLineRef<'a>;

    fn next(&mut self) -> Option<LogLineRef<'a>> {
        let entry = self.batch.entries.get(self.entry..self.entry + ENTRY_LEN)?;
        let (source_id, timestamp_us, len) = entry_fields(entry);
        self.entry += ENTRY_LEN;
        // In bounds: checked when the batch was decoded or built.
        let bytes = &self.batch.text[self.text..self.text + len];
        self.text += len;
        Some(LogLineRef {
            source: &self.batch.sources[source_id as usize],
            source_id,
            timestamp_us,
            bytes,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.batch.entries.len() - self.entry) / ENTRY_LEN;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Lines<'_> {}

/// A batch as it arrives, before its entries are checked against its
/// sources and text.
#[derive(Deserialize)]
struct Unchecked {
    sources: Vec<LogSource>,
    #[serde(with = "serde_bytes")]
    entries: Vec<u8>,
    #[serde(with = "serde_bytes")]
    text: Vec<u8>,
}

impl TryFrom<Unchecked> for LogBatch {
    type Error = String;

    fn try_from(raw: Unchecked) -> Result<Self, String> {
        if !raw.entries.len().is_multiple_of(ENTRY_LEN) {
            return Err(format!(
                "log batch entries are {} bytes, not a multiple of {ENTRY_LEN}",
                raw.entries.len()
            ));
        }
        let mut text = 0usize;
        for entry in raw.entries.chunks_exact(ENTRY_LEN) {
            let (source, _, len) = entry_fields(entry);
            if source as usize >= raw.sources.len() {
                return Err(format!(
                    "log batch line names source {source} of {}",
                    raw.sources.len()
                ));
            }
            text = text.saturating_add(len);
        }
        if text != raw.text.len() {
            return Err(format!(
                "log batch lines add up to {text} bytes but {} were sent",
                raw.text.len()
            ));
        }
        Ok(LogBatch {
            sources: raw.sources,
            entries: raw.entries,
            text: raw.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;

    fn line(service: &str, hook: Option<&str>, stderr: bool, ts: u64, bytes: &[u8]) -> LogLine {
        LogLine {
            service: service.into(),
            hook: hook.map(Into::into),
            stderr,
            show_time: false,
            replica: None,
            timestamp_us: ts,
            bytes: bytes.to_vec(),
        }
    }

    fn codec() -> impl Options {
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .reject_trailing_bytes()
    }

    #[test]
    fn lines_round_trip_through_the_wire_in_order() {
        let lines = vec![
            line("web", None, false, 1, b"one"),
            line("db", Some("pre_start"), false, 2, b""),
            line("web", None, true, 3, b"\xff raw"),
            line("web", None, false, 4, b"two"),
        ];
        let batch: LogBatch = lines.iter().cloned().collect();
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.sources().len(), 3, "origins are named once");
        let wire = codec().serialize(&batch).unwrap();
        let back: LogBatch = codec().deserialize(&wire).unwrap();
        assert_eq!(back.to_lines(), lines);
        assert_eq!(back.iter().len(), 4);
    }

    #[test]
    fn an_empty_batch_has_no_lines() {
        let batch = LogBatch::new();
        assert!(batch.is_empty());
        assert_eq!(batch.iter().next(), None);
    }

    fn forged(sources: usize, entries: &[(u32, u32)], text: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        for (source, len) in entries {
            raw.extend_from_slice(&source.to_le_bytes());
            raw.extend_from_slice(&0u64.to_le_bytes());
            raw.extend_from_slice(&len.to_le_bytes());
        }
        forged_raw(sources, &raw, text)
    }

    fn forged_raw(sources: usize, raw: &[u8], text: &[u8]) -> Vec<u8> {
        let sources: Vec<LogSource> = (0..sources)
            .map(|i| LogSource {
                service: format!("s{i}"),
                hook: None,
                stderr: false,
                show_time: false,
                replica: None,
            })
            .collect();
        #[derive(Serialize)]
        struct Forged<'a> {
            sources: Vec<LogSource>,
            #[serde(with = "serde_bytes")]
            entries: &'a [u8],
            #[serde(with = "serde_bytes")]
            text: &'a [u8],
        }
        codec()
            .serialize(&Forged {
                sources,
                entries: raw,
                text,
            })
            .unwrap()
    }

    #[test]
    fn a_batch_that_does_not_add_up_is_refused_when_decoded() {
        let ok = forged(1, &[(0, 2), (0, 1)], b"abc");
        assert!(codec().deserialize::<LogBatch>(&ok).is_ok());
        for bad in [
            forged(1, &[(1, 3)], b"abc"),
            forged(1, &[(0, 4)], b"abc"),
            forged(1, &[(0, 1)], b"abc"),
            forged(0, &[(0, 0)], b""),
            forged(1, &[(0, u32::MAX), (0, u32::MAX)], b""),
        ] {
            assert!(codec().deserialize::<LogBatch>(&bad).is_err());
        }
        let torn = forged_raw(1, &[0; 15], b"");
        assert!(codec().deserialize::<LogBatch>(&torn).is_err());
    }
}
