//! Reading logs back: `tail` walks files backwards in blocks (its cost depends
//! on the lines asked for, not on the file size), `head` and `read_all` merge
//! forward readers by timestamp with bounded memory, `read_after` resumes
//! after a timestamp by binary search (files are sorted by timestamp), and
//! `clear` empties files in place.
//!
//! All functions here do blocking file I/O; async callers use
//! `spawn_blocking`. A record that does not parse (crash debris) is skipped;
//! a last record without its `\n` is a write in progress and is not read yet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::record::{self, Record};
use super::{io_error, LogError, LogLine, Stream};

/// Bytes read per step when walking a file backwards.
const BACK_BLOCK: usize = 64 * 1024;
/// Buffer of a forward reader.
const FORWARD_BUFFER: usize = 256 * 1024;

/// The log files in `dir` as (service, stream), sorted; none if `dir` is missing.
pub fn log_files(dir: &Path) -> Result<Vec<(String, Stream)>, LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        if let Some((service, stream)) = name.to_str().and_then(record::parse_file_name) {
            files.push((service.to_string(), stream));
        }
    }
    files.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
    Ok(files)
}

struct Selected {
    service: String,
    stream: Stream,
    path: PathBuf,
}

fn select(dir: &Path, services: &[String]) -> Result<Vec<Selected>, LogError> {
    Ok(log_files(dir)?
        .into_iter()
        .filter(|(service, _)| services.is_empty() || services.contains(service))
        .map(|(service, stream)| Selected {
            path: record::log_path(dir, &service, stream),
            service,
            stream,
        })
        .collect())
}

/// Opens for reading without following symlinks; `None` if the file is gone.
fn open_read(path: &Path) -> Result<Option<File>, LogError> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn to_line(rec: &Record<'_>, service: &str, stream: Stream) -> LogLine {
    LogLine {
        service: service.to_string(),
        stream,
        origin: rec.origin(),
        timestamp_us: rec.timestamp_us,
        bytes: rec.payload.to_vec(),
    }
}

/// Records of a file from the last to the first.
struct BackwardRecords {
    file: File,
    /// File offset of `buf[0]`.
    pos: u64,
    /// Unreturned bytes before the last returned record; ends with `\n`
    /// once trimmed.
    buf: Vec<u8>,
    /// Length of `buf` to keep on the next call (drops the returned record).
    keep: usize,
    trimmed: bool,
}

impl BackwardRecords {
    fn new(file: File) -> io::Result<Self> {
        let pos = file.metadata()?.len();
        Ok(BackwardRecords {
            file,
            pos,
            buf: Vec::new(),
            keep: 0,
            trimmed: false,
        })
    }

    /// Prepends the block before `pos`.
    fn read_block(&mut self) -> io::Result<()> {
        let size = (self.pos as usize).min(BACK_BLOCK);
        let start = self.pos - size as u64;
        let mut block = vec![0; size + self.buf.len()];
        self.file.read_exact_at(&mut block[..size], start)?;
        block[size..].copy_from_slice(&self.buf);
        self.buf = block;
        self.pos = start;
        Ok(())
    }

    /// Drops bytes after the last `\n`: a write in progress.
    fn trim(&mut self) -> io::Result<()> {
        loop {
            if let Some(i) = memchr::memrchr(b'\n', &self.buf) {
                self.buf.truncate(i + 1);
                break;
            }
            if self.pos == 0 {
                self.buf.clear();
                break;
            }
            self.read_block()?;
        }
        self.trimmed = true;
        self.keep = self.buf.len();
        Ok(())
    }

    /// The previous record, without its `\n`.
    fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        if !self.trimmed {
            self.trim()?;
        }
        self.buf.truncate(self.keep);
        loop {
            let Some(body_end) = self.buf.len().checked_sub(1) else {
                if self.pos == 0 {
                    return Ok(None);
                }
                self.read_block()?;
                continue;
            };
            match memchr::memrchr(b'\n', &self.buf[..body_end]) {
                Some(i) => {
                    self.keep = i + 1;
                    return Ok(Some(&self.buf[i + 1..body_end]));
                }
                None if self.pos == 0 => {
                    self.keep = 0;
                    return Ok(Some(&self.buf[..body_end]));
                }
                None => self.read_block()?,
            }
        }
    }
}

/// The newest `n` lines of the selected services (empty: all) over stdout and
/// stderr, merged by timestamp, oldest first.
pub fn tail(
    dir: &Path,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Vec<LogLine>, LogError> {
    let mut lines = Vec::new();
    if n == 0 {
        return Ok(lines);
    }
    for sel in select(dir, services)? {
        let Some(file) = open_read(&sel.path)? else {
            continue;
        };
        let mut records = BackwardRecords::new(file).map_err(io_error(&sel.path))?;
        let mut taken = 0;
        while taken < n {
            let Some(raw) = records.next_record().map_err(io_error(&sel.path))? else {
                break;
            };
            let Some(rec) = record::parse(raw) else {
                continue;
            };
            if include_hooks || rec.hook.is_none() {
                lines.push(to_line(&rec, &sel.service, sel.stream));
                taken += 1;
            }
        }
    }
    lines.sort_unstable_by_key(|line| line.timestamp_us);
    let excess = lines.len().saturating_sub(n);
    lines.drain(..excess);
    Ok(lines)
}

/// The first `n` lines of the selected services, merged by timestamp.
pub fn head(
    dir: &Path,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Vec<LogLine>, LogError> {
    Ok(read_all(dir, services, include_hooks)?.take(n).collect())
}

/// Every line of the selected services in time order, read lazily.
pub fn read_all(
    dir: &Path,
    services: &[String],
    include_hooks: bool,
) -> Result<LogMerge, LogError> {
    read_after(dir, services, include_hooks, None)
}

/// Like [`read_all`], starting after the line stamped `after` (a timestamp
/// from an earlier read); starts at the beginning when `after` is `None`.
pub fn read_after(
    dir: &Path,
    services: &[String],
    include_hooks: bool,
    after: Option<u64>,
) -> Result<LogMerge, LogError> {
    let mut sources = Vec::new();
    for sel in select(dir, services)? {
        let Some(mut file) = open_read(&sel.path)? else {
            continue;
        };
        let start = match after {
            None => 0,
            Some(ts) => first_record_after(&file, ts).map_err(io_error(&sel.path))?,
        };
        file.seek(SeekFrom::Start(start))
            .map_err(io_error(&sel.path))?;
        sources.push(ForwardSource {
            reader: BufReader::with_capacity(FORWARD_BUFFER, file),
            record: Vec::new(),
            path: sel.path,
            service: sel.service,
            stream: sel.stream,
            include_hooks,
        });
    }
    Ok(LogMerge::new(sources))
}

/// Offset of the first record stamped after `after`, or the file's end.
/// Binary search over byte offsets: `first_at(x)` is the first record starting
/// at or after `x`, and its timestamp grows with `x`.
fn first_record_after(file: &File, after: u64) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match first_at(file, mid, len)? {
            Some((_, ts)) if ts <= after => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(first_at(file, lo, len)?.map_or(len, |(start, _)| start))
}

/// The first record starting at or after `x`: its offset and timestamp
/// (unreadable timestamps count as 0 so the search moves past them).
fn first_at(file: &File, x: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let mut start = x;
    if x > 0 {
        // A record starts right after a `\n`; look from x - 1.
        let mut at = x - 1;
        let mut block = [0u8; 4096];
        loop {
            if at >= len {
                return Ok(None);
            }
            let size = ((len - at) as usize).min(block.len());
            file.read_exact_at(&mut block[..size], at)?;
            if let Some(i) = memchr::memchr(b'\n', &block[..size]) {
                start = at + i as u64 + 1;
                break;
            }
            at += size as u64;
        }
    }
    if start >= len {
        return Ok(None);
    }
    let mut digits = [0u8; 16];
    let size = ((len - start) as usize).min(digits.len());
    file.read_exact_at(&mut digits[..size], start)?;
    Ok(Some((
        start,
        record::parse_timestamp(&digits[..size]).unwrap_or(0),
    )))
}

/// A file read forwards, record by record.
struct ForwardSource {
    reader: BufReader<File>,
    record: Vec<u8>,
    path: PathBuf,
    service: String,
    stream: Stream,
    include_hooks: bool,
}

impl ForwardSource {
    /// The next wanted line; `None` at the end (or on a read error, logged).
    fn next_line(&mut self) -> Option<LogLine> {
        loop {
            self.record.clear();
            match self.reader.read_until(b'\n', &mut self.record) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "reading log file failed: {e}");
                    return None;
                }
            }
            // Without `\n`: a write in progress, not a record yet.
            let Some((b'\n', raw)) = self.record.split_last() else {
                return None;
            };
            let Some(rec) = record::parse(raw) else {
                continue;
            };
            if self.include_hooks || rec.hook.is_none() {
                return Some(to_line(&rec, &self.service, self.stream));
            }
        }
    }
}

/// A k-way merge of forward readers by timestamp; memory is one buffered
/// block and one pending line per file.
pub struct LogMerge {
    sources: Vec<ForwardSource>,
    heads: Vec<Option<LogLine>>,
    order: BinaryHeap<Reverse<(u64, usize)>>,
}

impl LogMerge {
    fn new(mut sources: Vec<ForwardSource>) -> Self {
        let heads: Vec<_> = sources.iter_mut().map(ForwardSource::next_line).collect();
        let order = heads
            .iter()
            .enumerate()
            .filter_map(|(i, head)| head.as_ref().map(|l| Reverse((l.timestamp_us, i))))
            .collect();
        LogMerge {
            sources,
            heads,
            order,
        }
    }
}

impl Iterator for LogMerge {
    type Item = LogLine;

    fn next(&mut self) -> Option<LogLine> {
        let Reverse((_, i)) = self.order.pop()?;
        let next = self.sources[i].next_line();
        if let Some(line) = &next {
            self.order.push(Reverse((line.timestamp_us, i)));
        }
        std::mem::replace(&mut self.heads[i], next)
    }
}

/// The newest timestamp stored in `dir` (0 when empty).
pub(crate) fn newest_timestamp(dir: &Path) -> Result<u64, LogError> {
    let mut newest = 0;
    for sel in select(dir, &[])? {
        let Some(file) = open_read(&sel.path)? else {
            continue;
        };
        let mut records = BackwardRecords::new(file).map_err(io_error(&sel.path))?;
        while let Some(raw) = records.next_record().map_err(io_error(&sel.path))? {
            if let Some(ts) = record::parse_timestamp(raw) {
                newest = newest.max(ts);
                break;
            }
        }
    }
    Ok(newest)
}

/// Empties one file in place (open writers keep appending: they use
/// `O_APPEND`); a missing file is already empty.
pub(crate) fn truncate_file(path: &Path) -> Result<(), LogError> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file.set_len(0).map_err(io_error(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Empties `service`'s stdout and stderr files. Without a [`super::LogStore`]
/// at hand this truncates in place, which open writers survive; prefer
/// [`super::LogStore::clear`] while the config runs, which also drops lines
/// still buffered and cannot race a `max_size` rewrite.
pub fn clear(dir: &Path, service: &str) -> Result<(), LogError> {
    for stream in [Stream::Stdout, Stream::Stderr] {
        truncate_file(&record::log_path(dir, service, stream))?;
    }
    Ok(())
}

/// Empties every log file in `dir`.
pub fn clear_all(dir: &Path) -> Result<(), LogError> {
    for (service, stream) in log_files(dir)? {
        truncate_file(&record::log_path(dir, &service, stream))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::encode;
    use std::io::Write;

    fn file_with(records: &[(u64, &[u8])], trailing: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.stdout.log");
        let mut data = Vec::new();
        for (ts, payload) in records {
            encode(&mut data, *ts, b"-", payload);
        }
        data.extend_from_slice(trailing);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&data))
            .expect("write");
        let file = File::open(&path).expect("open");
        (dir, file)
    }

    fn backwards(file: File) -> Vec<Vec<u8>> {
        let mut records = BackwardRecords::new(file).expect("meta");
        let mut out = Vec::new();
        while let Some(raw) = records.next_record().expect("read") {
            out.push(record::parse(raw).expect("record").payload.to_vec());
        }
        out
    }

    #[test]
    fn backward_reader_crosses_blocks_and_ignores_a_write_in_progress() {
        let big = vec![b'b'; BACK_BLOCK + 100];
        let recs: Vec<(u64, &[u8])> = vec![(1, b"first"), (2, &big), (3, b""), (4, b"last")];
        let (_dir, file) = file_with(&recs, b"0000000000000005 - parti");
        let got = backwards(file);
        assert_eq!(got, vec![b"last".to_vec(), vec![], big, b"first".to_vec()]);
    }

    #[test]
    fn binary_search_finds_the_first_record_after_a_timestamp() {
        let payloads: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'x'; i % 37]).collect();
        let recs: Vec<(u64, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (10 * i as u64 + 10, p.as_slice()))
            .collect();
        let (_dir, file) = file_with(&recs, b"");
        let len = file.metadata().expect("meta").len();
        assert_eq!(first_record_after(&file, 0).expect("search"), 0);
        assert_eq!(first_record_after(&file, 10_000).expect("search"), len);
        for after in [10, 15, 20, 5000, 9995] {
            let off = first_record_after(&file, after).expect("search");
            let (start, ts) = first_at(&file, off, len).expect("read").expect("some");
            assert_eq!(start, off);
            assert_eq!(ts, (after / 10 + 1) * 10);
        }
    }
}
