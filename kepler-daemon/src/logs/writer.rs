//! The writer of one log file, shared by every pump that writes to it (the
//! service's pipe and its hooks'), and the per-config clock.
//!
//! A batch is stamped and encoded under the writer's lock, so timestamps
//! increase along each file. With `buffer_size: 0` a batch is written with one
//! `write` (page cache, no fsync) before the pump reads its pipe again; with
//! `buffer_size: N` encoded records gather until N bytes.
//!
//! Truncation (`max_size`): when a write would take the file past max_size,
//! the newest records that fit in half of max_size (the pending batch
//! included) are written to a temp file which is renamed over the log. Readers
//! holding the old file keep a consistent copy; nobody sees a torn record. The
//! cost is amortised: a rewrite copies max_size/2 once per max_size/2 written.
//!
//! Errors are logged, never raised to the pump: a disk problem drops the batch
//! (followers still get it) and the file is reopened on the next write, so the
//! service's pipe keeps draining.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{record, LogError, LogSettings};

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

/// Opens a log file for appending: mode 0640 before umask, never through a
/// symlink, closed on exec so children do not inherit it.
pub(crate) fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

pub(crate) struct FileWriter {
    path: PathBuf,
    file: Option<File>,
    /// Size of the file as we last knew it; may overestimate after an outside
    /// truncation, which the truncation check corrects with fstat.
    len: u64,
    pending: Vec<u8>,
    buffer_size: usize,
    max_size: Option<u64>,
    /// Set while writes fail, so a full disk logs one warning, not one per line.
    failing: bool,
}

impl FileWriter {
    pub(crate) fn new(path: PathBuf, settings: &LogSettings) -> Self {
        FileWriter {
            path,
            file: None,
            len: 0,
            pending: Vec::new(),
            buffer_size: settings.buffer_size,
            max_size: settings.max_size,
            failing: false,
        }
    }

    pub(crate) fn configure(&mut self, settings: &LogSettings) {
        self.buffer_size = settings.buffer_size;
        self.max_size = settings.max_size.map(|m| m.max(1));
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Encodes records (payload slices of `data`) stamped from `first_ts` on,
    /// and writes them if unbuffered or the buffer is full. Returns whether
    /// bytes reached the file.
    pub(crate) fn append<'a>(
        &mut self,
        first_ts: u64,
        tag: &[u8],
        payloads: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> bool {
        for (i, payload) in payloads.enumerate() {
            record::encode(&mut self.pending, first_ts + i as u64, tag, payload);
        }
        if self.pending.len() >= self.buffer_size {
            self.flush()
        } else {
            false
        }
    }

    /// Writes the pending records; returns whether bytes reached the file.
    pub(crate) fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let result = self.write_pending();
        // Written or not, the batch is gone: keeping it would grow without
        // bound while the disk is full.
        self.pending.clear();
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(path = %self.path.display(), "log file writable again");
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

    fn write_pending(&mut self) -> Result<(), LogError> {
        if self.file.is_none() {
            let file = open_log(&self.path).map_err(super::io_error(&self.path))?;
            self.len = file.metadata().map_err(super::io_error(&self.path))?.len();
            self.file = Some(file);
        }
        if let Some(max) = self.max_size {
            let incoming = self.pending.len() as u64;
            if self.len + incoming > max && self.refresh_len()? + incoming > max {
                return self.rewrite_keeping_newest(max);
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(&self.pending)
            .map_err(super::io_error(&self.path))?;
        self.len += self.pending.len() as u64;
        Ok(())
    }

    /// Re-reads the real size, in case the file was cleared from outside.
    fn refresh_len(&mut self) -> Result<u64, LogError> {
        if let Some(file) = &self.file {
            self.len = file.metadata().map_err(super::io_error(&self.path))?.len();
        }
        Ok(self.len)
    }

    /// Replaces the file with its newest records plus the pending ones, in at
    /// most `max / 2` bytes (or the single newest record if it is larger).
    fn rewrite_keeping_newest(&mut self, max: u64) -> Result<(), LogError> {
        let keep = (max / 2).max(1) as usize;
        let mut kept_old = Vec::new();
        let pending_start = if self.pending.len() >= keep {
            newest_records_start(&self.pending, self.pending.len() - keep)
        } else {
            let want = (keep - self.pending.len()) as u64;
            let from = self.len.saturating_sub(want);
            if let Some(file) = &self.file {
                kept_old.resize((self.len - from) as usize, 0);
                file.read_exact_at(&mut kept_old, from)
                    .map_err(super::io_error(&self.path))?;
            }
            if from > 0 {
                // Drop the partial record the cut landed in.
                let start = memchr::memchr(b'\n', &kept_old).map_or(kept_old.len(), |i| i + 1);
                kept_old.drain(..start);
            }
            0
        };

        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp_path = self.path.with_file_name(format!(".{name}.tmp"));
        let tmp_err = super::io_error(&tmp_path);
        // A leftover temp file from a crash is replaced.
        let _ = std::fs::remove_file(&tmp_path);
        let mut tmp = open_log(&tmp_path).map_err(super::io_error(&tmp_path))?;
        let new_part = &self.pending[pending_start..];
        let written = tmp
            .write_all(&kept_old)
            .and_then(|()| tmp.write_all(new_part));
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp_path, &self.path)) {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(tmp_err(e));
        }
        self.len = (kept_old.len() + new_part.len()) as u64;
        // The temp handle now names the log file.
        self.file = Some(tmp);
        Ok(())
    }

    /// Empties the file in place through this writer's handle (or the path if
    /// it is not open), dropping buffered records too.
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        self.pending.clear();
        match &self.file {
            Some(file) => file.set_len(0).map_err(super::io_error(&self.path))?,
            None => super::reader::truncate_file(&self.path)?,
        }
        self.len = 0;
        Ok(())
    }
}

/// The first record boundary at or after `from` in `buf` (a run of whole
/// records); if `from` is inside the last record, that record's start.
fn newest_records_start(buf: &[u8], from: usize) -> usize {
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
    fn newest_records_start_lands_on_a_record_boundary() {
        let buf = b"aa\nbbbb\ncc\n";
        assert_eq!(newest_records_start(buf, 0), 0);
        assert_eq!(newest_records_start(buf, 1), 3);
        assert_eq!(newest_records_start(buf, 3), 3);
        assert_eq!(newest_records_start(buf, 5), 8);
        // Inside the last record: keep it whole.
        assert_eq!(newest_records_start(buf, 9), 8);
    }
}
