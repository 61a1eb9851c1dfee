//! The writer of one stream, shared by every pump that writes to it (the
//! service's pipe and its hooks'), and the per-config clock.
//!
//! A batch is stamped and encoded under the writer's lock, so timestamps
//! increase along each stream. With `buffer_size: 0` a batch is written with
//! one `write` (page cache, no fsync) before the pump reads its pipe again;
//! with `buffer_size: N` encoded records gather until N bytes.
//!
//! Size limit (`max_size`): a stream is at most two segments of at most
//! `max_size / 2` bytes each. When the next records would not fit in the
//! current segment, the ones that fit are written, the current segment is
//! renamed over the previous one, and a new current segment takes the rest.
//! Nothing is rewritten and nothing is read back: a rotation is one rename,
//! so disk writes equal the bytes logged and memory does not depend on
//! `max_size`. Records never straddle segments, and the previous segment
//! always holds at least `max_size / 2` minus one record of the newest
//! bytes. Files from before segments existed (one file up to `max_size`), or
//! written under a larger `max_size`, are cut to size once, when the stream
//! is first written: their newest `max_size / 2` bytes become the previous
//! segment, copied by the kernel.
//!
//! Errors are logged, never raised to the pump: a disk problem drops the batch
//! (followers still get it) and the file is reopened on the next write, so the
//! service's pipe keeps draining.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::dir::LogDir;
use super::search::record_start_at_or_after;
use super::{record, LogError, LogSettings, MAX_LINE_BYTES};

/// The smallest `max_size` honoured: two segments of 2 KiB still hold whole
/// records of a useful length.
pub const MIN_MAX_SIZE: u64 = 4 * 1024;
/// The largest `buffer_size` honoured (the config refuses larger ones).
pub const MAX_BUFFER_SIZE: u64 = 1024 * 1024;
/// Capacity of the pending buffer kept after a write; more is given back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Hands out strictly increasing microsecond timestamps for one config.
pub(crate) struct LogClock(AtomicU64);

impl LogClock {
    pub(crate) fn starting_after(last: u64) -> Self {
        LogClock(AtomicU64::new(last))
    }

    /// Reserves `count` consecutive timestamps, the first no earlier than
    /// `now_us` and after every timestamp handed out before; returns the first.
    pub(crate) fn reserve(&self, now_us: u64, count: u64) -> u64 {
        let count = count.max(1);
        let mut first = 0;
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                first = now_us.max(last.saturating_add(1));
                Some(first.saturating_add(count - 1))
            });
        first
    }
}

pub(crate) struct FileWriter {
    dir: Arc<LogDir>,
    current: String,
    previous: String,
    file: Option<File>,
    /// Size of the current segment as we last knew it; may overestimate
    /// after an outside clear, which the rotation check corrects with fstat.
    len: u64,
    pending: Vec<u8>,
    buffer_size: usize,
    max_size: Option<u64>,
    /// Whether the segments on disk were checked against `max_size`.
    bounded: bool,
    /// Set while writes fail, so a full disk logs one warning, not one per line.
    failing: bool,
    /// Bytes written to the stream's files by this daemon, for the metrics
    /// endpoint.
    written_total: u64,
    /// The stream's files may hold lines: they were there when the store
    /// opened, or this writer (their only writer) has opened them since.
    /// A clear of a stream that holds none touches no file: a stop clears
    /// every service's logs by default, most of them never written.
    may_hold_lines: bool,
}

impl FileWriter {
    /// A writer of the stream whose segments are named `current` and
    /// `previous` in `dir`; nothing is opened until the first write.
    /// `on_disk`: whether either segment existed when the store opened.
    pub(crate) fn new(
        dir: Arc<LogDir>,
        current: String,
        previous: String,
        settings: &LogSettings,
        on_disk: bool,
    ) -> Self {
        let mut writer = FileWriter {
            dir,
            current,
            previous,
            file: None,
            len: 0,
            pending: Vec::new(),
            buffer_size: 0,
            max_size: None,
            bounded: false,
            failing: false,
            written_total: 0,
            may_hold_lines: on_disk,
        };
        writer.configure(settings);
        writer
    }

    /// Applies `settings` from now on, within the limits this writer honours
    /// whatever a snapshot says.
    pub(crate) fn configure(&mut self, settings: &LogSettings) {
        self.buffer_size = settings.buffer_size.min(MAX_BUFFER_SIZE as usize);
        let max_size = settings.max_size.map(|m| m.max(MIN_MAX_SIZE));
        if max_size != self.max_size {
            self.max_size = max_size;
            self.bounded = false;
        }
    }

    fn segment_cap(&self) -> Option<u64> {
        self.max_size.map(|max| max / 2)
    }

    /// The longest payload one record of `tag` may carry, so that a record
    /// always fits in a segment.
    pub(crate) fn max_payload(&self, tag: &[u8]) -> usize {
        match self.segment_cap() {
            None => MAX_LINE_BYTES,
            Some(cap) => {
                let room = (cap as usize).saturating_sub(record::encoded_len(tag, 0));
                MAX_LINE_BYTES.min(room).max(1)
            }
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Encodes records (payloads) stamped from `first_ts` on, and writes
    /// them if unbuffered or the buffer is full; `scratch` holds the encoded
    /// bytes of an unbuffered write. Returns whether bytes reached the file.
    pub(crate) fn append<'a>(
        &mut self,
        first_ts: u64,
        tag: &[u8],
        payloads: impl ExactSizeIterator<Item = &'a [u8]>,
        scratch: &mut Vec<u8>,
    ) -> bool {
        if self.buffer_size == 0 && self.pending.is_empty() {
            scratch.clear();
            for (i, payload) in payloads.enumerate() {
                record::encode(scratch, first_ts + i as u64, tag, payload);
            }
            let result = self.write_records(scratch);
            scratch.clear();
            return self.outcome(result);
        }
        for (i, payload) in payloads.enumerate() {
            record::encode(&mut self.pending, first_ts + i as u64, tag, payload);
        }
        if self.pending.len() >= self.buffer_size {
            self.flush()
        } else {
            false
        }
    }

    /// Bytes this writer has written to its files.
    pub(crate) fn written_total(&self) -> u64 {
        self.written_total
    }

    /// Writes the pending records; returns whether bytes reached the file.
    pub(crate) fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let pending = std::mem::take(&mut self.pending);
        let result = self.write_records(&pending);
        // Written or not, the batch is gone: keeping it would grow without
        // bound while the disk is full.
        if pending.capacity() <= KEEP_CAPACITY {
            self.pending = pending;
            self.pending.clear();
        }
        self.outcome(result)
    }

    fn outcome(&mut self, result: Result<(), LogError>) -> bool {
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(file = %self.current, "log file writable again");
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!("{e}; lines are dropped from disk until writes succeed");
                    self.failing = true;
                }
                // Reopen next time: the directory may have been recreated.
                self.file = None;
                false
            }
        }
    }

    fn error(&self, name: &str) -> impl FnOnce(io::Error) -> LogError {
        let path = self.dir.display_path(name);
        move |source| LogError::Io { path, source }
    }

    /// Writes whole records (`data` ends with `\n`), rotating whenever the
    /// next ones would not fit in the current segment.
    fn write_records(&mut self, data: &[u8]) -> Result<(), LogError> {
        if self.file.is_none() {
            self.open_current()?;
        }
        let Some(cap) = self.segment_cap() else {
            return self.write_bytes(data);
        };
        let cap = cap as usize;
        let mut rest = data;
        // Records older than the last two segments' worth would be rotated
        // away before this call ends: not written at all.
        if rest.len() > 2 * cap {
            rest = &rest[record_start(rest, rest.len() - 2 * cap)..];
        }
        while !rest.is_empty() {
            let mut room = cap.saturating_sub(self.len as usize);
            if rest.len() > room && self.len > 0 {
                // About to rotate: make sure the segment was not cleared meanwhile.
                room = cap.saturating_sub(self.refresh_len()? as usize);
            }
            if rest.len() <= room {
                return self.write_bytes(rest);
            }
            // The run of whole records that fits.
            let fit = memchr::memrchr(b'\n', &rest[..room]).map_or(0, |i| i + 1);
            if fit > 0 {
                self.write_bytes(&rest[..fit])?;
                rest = &rest[fit..];
            } else if self.len == 0 {
                // A record larger than a segment (max_size lowered while a
                // pump split lines for the old one): it gets a segment alone.
                let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                self.write_bytes(&rest[..end])?;
                rest = &rest[end..];
            }
            if !rest.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let err = self.error(&self.current);
        let file = self.file.as_mut().expect("opened before writing");
        self.may_hold_lines = true;
        file.write_all(bytes).map_err(err)?;
        self.len += bytes.len() as u64;
        self.written_total += bytes.len() as u64;
        Ok(())
    }

    /// Re-reads the current segment's size, in case it was cleared from
    /// outside.
    fn refresh_len(&mut self) -> Result<u64, LogError> {
        if let Some(file) = &self.file {
            self.len = file.metadata().map_err(self.error(&self.current))?.len();
        }
        Ok(self.len)
    }

    fn open_current(&mut self) -> Result<(), LogError> {
        let file = self
            .dir
            .open_append(&self.current)
            .map_err(self.error(&self.current))?;
        // Kept while the service runs: out of the way of spawns.
        let file = File::from(crate::process::descriptors::keep_high(file.into()));
        self.may_hold_lines = true;
        self.len = file.metadata().map_err(self.error(&self.current))?.len();
        self.file = Some(file);
        if !self.bounded {
            if let Some(cap) = self.segment_cap() {
                self.cut_to_size(cap)?;
            }
            self.bounded = true;
        }
        Ok(())
    }

    /// Current segment renamed over the previous one; a new current one.
    fn rotate(&mut self) -> Result<(), LogError> {
        self.file = None;
        match self.dir.rename(&self.current, &self.previous) {
            Ok(()) => {}
            // Removed from outside: nothing to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.error(&self.current)(e)),
        }
        self.open_current()
    }

    /// Brings segments written before segments existed (or under a larger
    /// `max_size`) within `cap` bytes each, keeping their newest records.
    fn cut_to_size(&mut self, cap: u64) -> Result<(), LogError> {
        if self.len > cap {
            // The newest records of the oversized current segment become the
            // previous segment; the current one starts empty.
            self.copy_newest(&self.current.clone(), cap)?;
            let err = self.error(&self.current);
            self.file.as_ref().expect("open").set_len(0).map_err(err)?;
            self.len = 0;
        }
        let previous = self.previous.clone();
        let err = self.error(&previous);
        if let Some(file) = self.dir.open_read(&previous).map_err(err)? {
            let len = file.metadata().map_err(self.error(&previous))?.len();
            if len > cap {
                self.copy_newest(&previous, cap)?;
            }
        }
        Ok(())
    }

    /// Replaces the previous segment with the newest whole records of
    /// `source` that fit in `cap` bytes (through a temp file and a rename).
    fn copy_newest(&self, source: &str, cap: u64) -> Result<(), LogError> {
        let Some(mut from) = self.dir.open_read(source).map_err(self.error(source))? else {
            return Ok(());
        };
        let len = from.metadata().map_err(self.error(source))?.len();
        let start = record_start_at_or_after(&from, len.saturating_sub(cap), len)
            .map_err(self.error(source))?;
        let tmp = format!(".{}.tmp", self.previous);
        let mut out = self.dir.create_new(&tmp).map_err(self.error(&tmp))?;
        let copied = match start {
            Some(start) => from
                .seek(SeekFrom::Start(start))
                .and_then(|_| io::copy(&mut (&mut from).take(len - start), &mut out))
                .map(drop),
            None => Ok(()),
        };
        if let Err(e) = copied.and_then(|()| self.dir.rename(&tmp, &self.previous)) {
            let _ = self.dir.remove(&tmp);
            return Err(self.error(&tmp)(e));
        }
        Ok(())
    }

    /// Empties the stream: drops buffered records and the previous segment,
    /// and empties the current one in place (readers holding it see it end).
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.pending.clear();
        if !self.may_hold_lines {
            return Ok(());
        }
        self.dir
            .remove(&self.previous)
            .map_err(self.error(&self.previous))?;
        match &self.file {
            Some(file) => file.set_len(0).map_err(self.error(&self.current))?,
            None => truncate(&self.dir, &self.current)?,
        }
        self.len = 0;
        self.may_hold_lines = false;
        Ok(())
    }
}

/// Empties one file in place (open writers keep appending: they use
/// `O_APPEND`); a missing file is already empty.
pub(crate) fn truncate(dir: &LogDir, name: &str) -> Result<(), LogError> {
    let err = |e| LogError::Io {
        path: dir.display_path(name),
        source: e,
    };
    if let Some(file) = dir.open_write(name).map_err(err)? {
        file.set_len(0).map_err(err)?;
    }
    Ok(())
}

/// The first record boundary at or after `from` in `buf` (a run of whole
/// records); if `from` is inside the last record, that record's start.
fn record_start(buf: &[u8], from: usize) -> usize {
    if from == 0 || buf[from - 1] == b'\n' {
        return from;
    }
    match memchr::memchr(b'\n', &buf[from..]) {
        Some(i) if from + i + 1 < buf.len() => from + i + 1,
        // Cut inside the last record: keep that whole record.
        _ => memchr::memrchr(b'\n', &buf[..buf.len() - 1]).map_or(0, |i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_strictly_increasing_even_when_the_wall_clock_is_not() {
        let clock = LogClock::starting_after(100);
        assert_eq!(clock.reserve(50, 1), 101);
        assert_eq!(clock.reserve(500, 3), 500);
        assert_eq!(clock.reserve(500, 1), 503);
        assert_eq!(clock.reserve(1000, 2), 1000);
    }

    #[test]
    fn record_start_lands_on_a_record_boundary() {
        let buf = b"aa\nbbbb\ncc\n";
        assert_eq!(record_start(buf, 0), 0);
        assert_eq!(record_start(buf, 1), 3);
        assert_eq!(record_start(buf, 3), 3);
        assert_eq!(record_start(buf, 5), 8);
        // Inside the last record: keep it whole.
        assert_eq!(record_start(buf, 9), 8);
    }

    fn writer_in(dir: &tempfile::TempDir, max_size: u64) -> FileWriter {
        let log_dir = Arc::new(LogDir::open(dir.path()).unwrap());
        let settings = LogSettings {
            max_size: Some(max_size),
            ..LogSettings::default()
        };
        FileWriter::new(
            log_dir,
            "w.stdout.log".into(),
            "w.stdout.log.1".into(),
            &settings,
            true,
        )
    }

    fn sizes(dir: &tempfile::TempDir) -> (u64, u64) {
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
        (size("w.stdout.log.1"), size("w.stdout.log"))
    }

    fn stamps(dir: &tempfile::TempDir) -> Vec<u64> {
        let mut data = std::fs::read(dir.path().join("w.stdout.log.1")).unwrap_or_default();
        data.extend(std::fs::read(dir.path().join("w.stdout.log")).unwrap_or_default());
        data.split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .map(|r| record::parse(r).expect("whole record").timestamp_us)
            .collect()
    }

    #[test]
    fn rotation_keeps_two_segments_within_half_of_max_size_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_in(&dir, 8192);
        let mut scratch = Vec::new();
        let payload = [b'x'; 81]; // 100-byte records
        let mut ts = 1;
        for batch in [1usize, 7, 30, 55, 200, 3] {
            let payloads = vec![&payload[..]; batch];
            assert!(writer.append(ts, b"-", payloads.into_iter(), &mut scratch));
            ts += batch as u64;
            let (prev, cur) = sizes(&dir);
            assert!(prev <= 4096 && cur <= 4096, "segments {prev} + {cur}");
            let kept = stamps(&dir);
            assert_eq!(*kept.last().unwrap(), ts - 1, "the newest record is kept");
            assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
            if ts > 100 {
                assert!(prev + cur >= 4000, "at least half of max_size kept");
            }
        }
    }

    #[test]
    fn an_oversized_single_file_is_cut_to_its_newest_half_on_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for ts in 1..=1000 {
            record::encode(&mut old, ts, b"-", &[b'y'; 81]);
        }
        std::fs::write(dir.path().join("w.stdout.log"), &old).unwrap();
        let mut writer = writer_in(&dir, 16 * 1024);
        let mut scratch = Vec::new();
        assert!(writer.append(1001, b"-", [&b"new"[..]].into_iter(), &mut scratch));
        let (prev, cur) = sizes(&dir);
        assert!(prev <= 8192 && prev > 8000, "previous segment {prev}");
        assert_eq!(cur, record::encoded_len(b"-", 3) as u64);
        let kept = stamps(&dir);
        assert_eq!(kept.len(), 81 + 1);
        assert_eq!(kept[0], 920);
        assert_eq!(*kept.last().unwrap(), 1001);
    }

    #[test]
    fn a_batch_larger_than_max_size_writes_only_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer_in(&dir, 4096);
        let mut scratch = Vec::new();
        let payload = [b'z'; 81];
        let payloads = vec![&payload[..]; 500];
        assert!(writer.append(1, b"-", payloads.into_iter(), &mut scratch));
        let kept = stamps(&dir);
        assert_eq!(*kept.last().unwrap(), 500);
        assert!(
            kept.len() >= 20 && kept.len() <= 40,
            "{} records",
            kept.len()
        );
    }

    #[test]
    fn payloads_are_cut_to_fit_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer_in(&dir, 4096);
        assert_eq!(
            writer.max_payload(b"-"),
            2048 - record::encoded_len(b"-", 0)
        );
        let unbounded = writer_in(&dir, 1 << 30);
        assert_eq!(unbounded.max_payload(b"-"), MAX_LINE_BYTES);
    }
}
