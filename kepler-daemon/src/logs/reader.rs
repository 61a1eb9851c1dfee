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
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::record::{self, Record};
use kepler_protocol::{LogBatch, LogSource};

use super::{io_error, LogError, LogLine, Stream};

/// Bytes read per step when walking a file backwards.
const BACK_BLOCK: usize = 64 * 1024;
/// Buffer of a forward reader; also bounds the longest record it can read
/// (a line of `MAX_LINE_BYTES` plus its header fits many times over).
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
    walk_back(dir, services, n, include_hooks, |rec, sel| {
        lines.push(to_line(rec, &sel.service, sel.stream));
    })?;
    lines.sort_unstable_by_key(|line| line.timestamp_us);
    let excess = lines.len().saturating_sub(n);
    lines.drain(..excess);
    Ok(lines)
}

/// The timestamp of the oldest of the newest `n` lines, where a tail of
/// `n` lines starts; `None` when there are no lines. Like [`tail`], its
/// cost follows `n`, not the file sizes, but it keeps only timestamps.
pub fn tail_start(
    dir: &Path,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Option<u64>, LogError> {
    let mut stamps = Vec::new();
    walk_back(dir, services, n, include_hooks, |rec, _| {
        stamps.push(rec.timestamp_us);
    })?;
    stamps.sort_unstable_by(|a, b| b.cmp(a));
    Ok(stamps
        .get(..n.min(stamps.len()))
        .and_then(|newest| newest.last().copied()))
}

/// Hands `keep` the newest `n` wanted records of each selected file, newest
/// first within a file.
fn walk_back(
    dir: &Path,
    services: &[String],
    n: usize,
    include_hooks: bool,
    mut keep: impl FnMut(&Record<'_>, &Selected),
) -> Result<(), LogError> {
    if n == 0 {
        return Ok(());
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
                keep(&rec, &sel);
                taken += 1;
            }
        }
    }
    Ok(())
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
        sources.push(ForwardSource::new(
            file,
            sel.path,
            sel.service,
            sel.stream,
            include_hooks,
        ));
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

/// A file read forwards, record by record, through a buffer of whole
/// blocks: the current record is parsed in place, and is copied only by
/// whoever takes it.
struct ForwardSource {
    file: File,
    /// Bytes read and not yet consumed start at `buf[start]`, end at `filled`.
    buf: Box<[u8]>,
    start: usize,
    filled: usize,
    eof: bool,
    current: Option<Current>,
    path: PathBuf,
    service: String,
    stream: Stream,
    include_hooks: bool,
}

/// The record at `ForwardSource::start`, as offsets into its buffer.
#[derive(Clone, Copy)]
struct Current {
    timestamp_us: u64,
    /// Hook name range, or `None` for the service's own line.
    hook: Option<(usize, usize)>,
    payload: (usize, usize),
    /// Offset just past the record's `\n`.
    next: usize,
}

impl ForwardSource {
    fn new(
        file: File,
        path: PathBuf,
        service: String,
        stream: Stream,
        include_hooks: bool,
    ) -> Self {
        let mut source = ForwardSource {
            file,
            buf: vec![0; FORWARD_BUFFER].into_boxed_slice(),
            start: 0,
            filled: 0,
            eof: false,
            current: None,
            path,
            service,
            stream,
            include_hooks,
        };
        source.find_record();
        source
    }

    /// The current record, borrowed from the buffer.
    fn record(&self) -> Option<Record<'_>> {
        let c = self.current?;
        Some(Record {
            timestamp_us: c.timestamp_us,
            hook: c.hook.map(|(a, b)| &self.buf[a..b]),
            payload: &self.buf[c.payload.0..c.payload.1],
        })
    }

    fn advance(&mut self) {
        if let Some(c) = self.current.take() {
            self.start = c.next;
            self.find_record();
        }
    }

    /// Moves `current` to the next wanted record at or after `start`; none
    /// at the end of the file (or on a read error, logged). Bytes after the
    /// last `\n` are a write in progress, not a record yet.
    fn find_record(&mut self) {
        loop {
            let pending = &self.buf[self.start..self.filled];
            let Some(len) = memchr::memchr(b'\n', pending) else {
                if self.eof || !self.refill() {
                    return;
                }
                continue;
            };
            let (at, next) = (self.start, self.start + len + 1);
            if let Some(rec) = record::parse(&pending[..len]) {
                if self.include_hooks || rec.hook.is_none() {
                    let payload_at = at + record::payload_offset(&rec);
                    self.current = Some(Current {
                        timestamp_us: rec.timestamp_us,
                        hook: rec.hook.map(|h| {
                            (at + record::HOOK_OFFSET, at + record::HOOK_OFFSET + h.len())
                        }),
                        payload: (payload_at, at + len),
                        next,
                    });
                    return;
                }
            }
            self.start = next;
        }
    }

    /// Reads more of the file after the unconsumed bytes; false at the end.
    fn refill(&mut self) -> bool {
        if self.start == 0 && self.filled == self.buf.len() {
            // A whole buffer without a `\n` is no record (records are at most
            // a line plus a header): skip it as debris.
            self.filled = 0;
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        loop {
            match self.file.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return false;
                }
                Ok(n) => {
                    self.filled += n;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "reading log file failed: {e}");
                    self.eof = true;
                    return false;
                }
            }
        }
    }
}

/// How much one [`LogMerge::fill`] may take.
#[derive(Debug, Clone, Copy)]
pub struct PageLimit {
    pub lines: usize,
    /// Bytes of line text; a page holds at least one line whatever its size.
    pub text_bytes: usize,
}

/// The batch source ids given to the origins of one file: (hook, id).
type OriginIds = Vec<(Option<Box<[u8]>>, u32)>;

/// A k-way merge of forward readers by timestamp; memory is one buffer per
/// file. Iterating yields owned lines; [`fill`](Self::fill) copies records
/// straight into a wire batch.
pub struct LogMerge {
    sources: Vec<ForwardSource>,
    order: BinaryHeap<Reverse<(u64, usize)>>,
}

impl LogMerge {
    fn new(sources: Vec<ForwardSource>) -> Self {
        let order = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.current.map(|c| Reverse((c.timestamp_us, i))))
            .collect();
        LogMerge { sources, order }
    }

    /// The source holding the oldest pending record, taken off the heap;
    /// hand it back with [`requeue`](Self::requeue) once advanced.
    fn pop(&mut self) -> Option<usize> {
        self.order.pop().map(|Reverse((_, i))| i)
    }

    fn requeue(&mut self, i: usize) {
        if let Some(c) = self.sources[i].current {
            self.order.push(Reverse((c.timestamp_us, i)));
        }
    }

    /// Whether any line is left.
    pub fn has_more(&self) -> bool {
        !self.order.is_empty()
    }

    /// Moves lines into `batch` until `limit` is reached or the files end;
    /// returns the timestamp of the last line moved.
    pub fn fill(&mut self, batch: &mut LogBatch, limit: PageLimit) -> Option<u64> {
        // Each file's origins get a batch source id once: (hook, id) pairs.
        let mut ids: Vec<OriginIds> = vec![Vec::new(); self.sources.len()];
        let mut last = None;
        while batch.len() < limit.lines && (batch.is_empty() || batch.text_len() < limit.text_bytes)
        {
            let Some(i) = self.pop() else { break };
            let source = &mut self.sources[i];
            let rec = source.record().expect("a queued source has a record");
            let (ts, hook) = (rec.timestamp_us, rec.hook);
            let known = ids[i]
                .iter()
                .find(|(h, _)| h.as_deref() == hook)
                .map(|(_, id)| *id);
            let id = match known {
                Some(id) => id,
                None => {
                    let id = batch.add_source(LogSource {
                        service: source.service.clone(),
                        hook: hook.map(|h| String::from_utf8_lossy(h).into_owned()),
                        stderr: source.stream == Stream::Stderr,
                        // Set by whoever sends the page, who knows the config.
                        show_time: false,
                    });
                    ids[i].push((hook.map(Into::into), id));
                    id
                }
            };
            batch.push_line(id, ts, rec.payload);
            last = Some(ts);
            source.advance();
            self.requeue(i);
        }
        last
    }
}

impl Iterator for LogMerge {
    type Item = LogLine;

    fn next(&mut self) -> Option<LogLine> {
        let i = self.pop()?;
        let source = &mut self.sources[i];
        let rec = source.record().expect("a queued source has a record");
        let line = to_line(&rec, &source.service, source.stream);
        source.advance();
        self.requeue(i);
        Some(line)
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

    fn dir_with(files: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).expect("write");
        }
        dir
    }

    #[test]
    fn forward_reader_crosses_buffer_refills_skips_debris_and_a_write_in_progress() {
        // Lengths that put record ends on every side of the 256 KiB refills.
        let payloads: Vec<Vec<u8>> = (0..400u32)
            .map(|i| vec![b'a' + (i % 26) as u8; (i as usize * 7919) % 70_000])
            .collect();
        let mut data = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            encode(&mut data, i as u64 + 1, b"-", p);
            if i == 200 {
                data.extend_from_slice(b"torn debris without a header\n");
            }
        }
        data.extend_from_slice(b"0000000000009999 - not finished");
        let dir = dir_with(&[("x.stdout.log", data)]);
        let got: Vec<Vec<u8>> = read_all(dir.path(), &[], true)
            .expect("read")
            .map(|l| l.bytes)
            .collect();
        assert_eq!(got.len(), payloads.len());
        assert!(got == payloads, "every record, in order, exactly");
    }

    #[test]
    fn a_page_merges_files_and_hooks_into_one_batch_and_stops_at_its_limits() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        for ts in 1..=9u64 {
            match ts % 3 {
                0 => encode(&mut err, ts, b"-", format!("err {ts}").as_bytes()),
                1 => encode(&mut out, ts, b"-", format!("out {ts}").as_bytes()),
                _ => encode(&mut out, ts, b"pre_start", format!("hook {ts}").as_bytes()),
            }
        }
        let dir = dir_with(&[("web.stdout.log", out), ("web.stderr.log", err)]);
        let mut merge = read_all(dir.path(), &[], true).expect("read");
        let mut batch = LogBatch::new();
        let limit = PageLimit {
            lines: 5,
            text_bytes: usize::MAX,
        };
        assert_eq!(merge.fill(&mut batch, limit), Some(5));
        assert!(merge.has_more());
        let shown: Vec<String> = batch
            .iter()
            .map(|l| {
                let hook = l.source.hook.as_deref().unwrap_or("-");
                let text = String::from_utf8_lossy(l.bytes);
                format!("{} {} {hook} {text}", l.timestamp_us, l.source.stderr)
            })
            .collect();
        assert_eq!(
            shown,
            [
                "1 false - out 1",
                "2 false pre_start hook 2",
                "3 true - err 3",
                "4 false - out 4",
                "5 false pre_start hook 5"
            ]
        );
        assert_eq!(batch.sources().len(), 3, "each origin named once");

        // The byte limit ends a page after the line that reaches it.
        let mut batch = LogBatch::new();
        let limit = PageLimit {
            lines: 100,
            text_bytes: 5,
        };
        assert_eq!(merge.fill(&mut batch, limit), Some(6));
        assert_eq!(batch.len(), 1);
        let mut rest = LogBatch::new();
        let limit = PageLimit {
            lines: 100,
            text_bytes: usize::MAX,
        };
        assert_eq!(merge.fill(&mut rest, limit), Some(9));
        assert_eq!(rest.len(), 3);
        assert!(!merge.has_more());
    }

    #[test]
    fn a_tail_starts_at_the_oldest_of_the_newest_lines_over_all_files() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        for ts in 1..=10u64 {
            let file = if ts % 2 == 0 { &mut err } else { &mut out };
            let tag: &[u8] = if ts == 9 { b"post_exit" } else { b"-" };
            encode(file, ts, tag, b"x");
        }
        let dir = dir_with(&[("a.stdout.log", out), ("a.stderr.log", err)]);
        let start = |n, hooks| tail_start(dir.path(), &[], n, hooks).expect("read");
        assert_eq!(start(3, true), Some(8));
        assert_eq!(start(3, false), Some(7), "the hook's line does not count");
        assert_eq!(start(100, true), Some(1));
        assert_eq!(start(0, true), None);
        let empty = dir_with(&[]);
        assert_eq!(tail_start(empty.path(), &[], 5, true).expect("read"), None);
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
