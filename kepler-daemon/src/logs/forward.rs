//! Reading forwards in time: whole logs, `--head`, cursor pages and a
//! follow's backlog. Each stream is read through its previous segment and
//! then its current one, record by record, inside a block buffer; streams
//! are merged by timestamp with a heap. Memory is one buffer per stream that
//! has records, sized to what it holds (a few KiB for a small file, at most
//! [`FORWARD_BUFFER_MAX`]).
//!
//! A page over more than [`MERGE_STREAMS`] streams reads them one at a time
//! instead (see [`read_page`]), so it never holds more than one stream's
//! files open.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use kepler_protocol::{LogBatch, LogSource};

use super::dir::LogDir;
use super::filter::LineFilter;
use super::record::{self, Record};
use super::search;
use super::segments::{self, StreamFiles, MERGE_STREAMS};
use super::{LogError, LogLine, Stream};

/// A buffer's first size: enough for many records, small for many files.
const FORWARD_BUFFER_MIN: usize = 4 * 1024;
const FORWARD_BUFFER_START: usize = 64 * 1024;
/// The largest buffer: also bounds the longest record that can be read (a
/// line of `MAX_LINE_BYTES` plus its header fits twice over).
const FORWARD_BUFFER_MAX: usize = 256 * 1024;

/// Where a stream's reading starts and ends, by timestamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Records stamped at or before this are skipped.
    pub(crate) after: Option<u64>,
    /// Records stamped after this end the stream.
    pub(crate) until: u64,
}

/// One stream read forwards, record by record, through a buffer of whole
/// blocks: the current record is parsed in place, and is copied only by
/// whoever takes it.
pub(crate) struct ForwardSource {
    /// Segments still to read, the one being read first.
    files: Vec<File>,
    /// Bytes read and not yet consumed are `buf[start..filled]`.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    eof: bool,
    current: Option<Current>,
    until: u64,
    /// Timestamp of the last record parsed: a later segment repeating it (a
    /// crash in the middle of a migration) is skipped.
    last_parsed: Option<u64>,
    /// Timestamp of the last record handed out.
    pub(crate) last_taken: Option<u64>,
    pub(crate) service: String,
    pub(crate) stream: Stream,
    include_hooks: bool,
    /// Lines it hands out match this (the window is applied by seeking).
    filter: LineFilter,
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
    /// Opens a stream at its first record inside `window`.
    fn open(
        files: StreamFiles,
        window: Window,
        include_hooks: bool,
        filter: &LineFilter,
    ) -> io::Result<Self> {
        let StreamFiles {
            service,
            stream,
            mut files,
        } = files;
        if let Some(after) = window.after {
            // Skip the segments that end before `after`: the previous one
            // when the current one starts after it.
            if files.len() == 2 {
                let current_first = search::first_timestamp(&files[1])?;
                if current_first.is_some_and(|ts| ts <= after) {
                    files.remove(0);
                }
            }
            if let Some(first) = files.first_mut() {
                let offset = search::first_record_after(first, after)?;
                first.seek(SeekFrom::Start(offset))?;
            }
        }
        files.reverse();
        let mut source = ForwardSource {
            files,
            buf: Vec::new(),
            start: 0,
            filled: 0,
            eof: false,
            current: None,
            until: window.until,
            last_parsed: window.after,
            last_taken: None,
            service,
            stream,
            include_hooks,
            filter: filter.clone(),
        };
        source.find_record();
        Ok(source)
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
            self.last_taken = Some(c.timestamp_us);
            self.start = c.next;
            self.find_record();
        }
    }

    /// Moves `current` to the next wanted record at or after `start`; none
    /// at the end of the last segment, past `until`, or on a read error
    /// (logged). Bytes after the last `\n` of a segment are a write in
    /// progress (or a crash's debris), not a record.
    fn find_record(&mut self) {
        loop {
            let pending = &self.buf[self.start..self.filled];
            let Some(len) = memchr::memchr(b'\n', pending) else {
                if self.eof {
                    if !self.next_segment() {
                        return;
                    }
                } else {
                    self.refill();
                }
                continue;
            };
            let (at, next) = (self.start, self.start + len + 1);
            if let Some(rec) = record::parse(&pending[..len]) {
                if rec.timestamp_us > self.until {
                    self.files.clear();
                    self.eof = true;
                    self.start = self.filled;
                    return;
                }
                let fresh = self.last_parsed.is_none_or(|last| rec.timestamp_us > last);
                if fresh {
                    self.last_parsed = Some(rec.timestamp_us);
                }
                if fresh
                    && (self.include_hooks || rec.hook.is_none())
                    && self.filter.matches(rec.payload)
                {
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

    /// Drops the finished segment; false when it was the last.
    fn next_segment(&mut self) -> bool {
        self.files.pop();
        if self.buf.len() < FORWARD_BUFFER_START {
            // Sized for a small segment: size it again for the next one.
            self.buf = Vec::new();
        }
        self.start = 0;
        self.filled = 0;
        self.eof = self.files.is_empty();
        !self.eof
    }

    /// Reads more of the segment after the unconsumed bytes; sets `eof` at
    /// its end.
    fn refill(&mut self) {
        let Some(file) = self.files.last_mut() else {
            self.eof = true;
            return;
        };
        if self.buf.is_empty() {
            // Sized to what is left of the file, so small files cost little.
            let left = file
                .metadata()
                .ok()
                .zip(file.stream_position().ok())
                .map_or(FORWARD_BUFFER_START as u64, |(m, pos)| {
                    m.len().saturating_sub(pos)
                });
            let size = (left as usize).clamp(FORWARD_BUFFER_MIN, FORWARD_BUFFER_START);
            self.buf = vec![0; size];
        }
        if self.start == 0 && self.filled == self.buf.len() {
            if self.buf.len() < FORWARD_BUFFER_MAX {
                self.buf
                    .resize((self.buf.len() * 2).min(FORWARD_BUFFER_MAX), 0);
            } else {
                // A whole buffer without a `\n` is no record (records are at
                // most a line plus a header): skip it as debris.
                self.filled = 0;
            }
        }
        self.buf.copy_within(self.start..self.filled, 0);
        self.filled -= self.start;
        self.start = 0;
        loop {
            match file.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.filled += n;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(service = %self.service, stream = self.stream.as_str(), "reading a log file failed: {e}");
                    self.eof = true;
                    return;
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

/// The batch source ids given to the origins of one stream: (hook, id).
type OriginIds = Vec<(Option<Box<[u8]>>, u32)>;

/// A k-way merge of forward readers by timestamp. Iterating yields owned
/// lines; [`fill`](Self::fill) copies records straight into a wire batch.
pub struct LogMerge {
    sources: Vec<ForwardSource>,
    order: BinaryHeap<Reverse<(u64, usize)>>,
}

impl LogMerge {
    /// Opens the selected streams, each inside the window `window_of` gives
    /// it (`None`: skip the stream) narrowed to `filter`'s, keeping the
    /// lines `filter` matches.
    pub(crate) fn open(
        dir: &LogDir,
        services: &[String],
        include_hooks: bool,
        filter: &LineFilter,
        window_of: impl FnMut(&str, Stream) -> Option<Window>,
    ) -> Result<LogMerge, LogError> {
        let windows = stream_windows(dir, services, filter, window_of)?;
        LogMerge::over(dir, &windows, include_hooks, filter)
    }

    /// Opens every stream of `windows` at once.
    fn over(
        dir: &LogDir,
        windows: &[StreamWindow],
        include_hooks: bool,
        filter: &LineFilter,
    ) -> Result<LogMerge, LogError> {
        let mut sources = Vec::new();
        for window in windows {
            sources.extend(window.open(dir, include_hooks, filter)?);
        }
        let order = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.current.map(|c| Reverse((c.timestamp_us, i))))
            .collect();
        Ok(LogMerge { sources, order })
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

    /// The streams read, with the timestamp of the last line taken from each.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &ForwardSource> {
        self.sources.iter()
    }

    /// Moves lines into `batch` until `limit` is reached or the files end;
    /// returns the timestamp of the last line moved.
    pub fn fill(&mut self, batch: &mut LogBatch, limit: PageLimit) -> Option<u64> {
        // Each stream's origins get a batch source id once: (hook, id) pairs.
        let mut ids: Vec<OriginIds> = vec![Vec::new(); self.sources.len()];
        let mut last = None;
        while batch.len() < limit.lines && (batch.is_empty() || batch.text_len() < limit.text_bytes)
        {
            let Some(i) = self.pop() else { break };
            let source = &mut self.sources[i];
            let rec = source.record().expect("a queued source has a record");
            let (ts, hook) = (rec.timestamp_us, rec.hook);
            let id = origin_id(&mut ids[i], batch, &source.service, source.stream, hook);
            batch.push_line(id, ts, rec.payload);
            last = Some(ts);
            source.advance();
            self.requeue(i);
        }
        last
    }
}

/// The batch source id of one origin of a stream, registered on first use.
fn origin_id(
    ids: &mut OriginIds,
    batch: &mut LogBatch,
    service: &str,
    stream: Stream,
    hook: Option<&[u8]>,
) -> u32 {
    if let Some((_, id)) = ids.iter().find(|(h, _)| h.as_deref() == hook) {
        return *id;
    }
    let id = batch.add_source(LogSource {
        service: service.to_string(),
        hook: hook.map(|h| String::from_utf8_lossy(h).into_owned()),
        stderr: stream == Stream::Stderr,
        // Set by whoever sends the page, who knows the config.
        show_time: false,
        replica: None,
    });
    ids.push((hook.map(Into::into), id));
    id
}

/// One selected stream and the window a read covers of it.
struct StreamWindow {
    service: String,
    stream: Stream,
    window: Window,
}

impl StreamWindow {
    /// The stream at its first wanted record; `None` when it has none.
    fn open(
        &self,
        dir: &LogDir,
        include_hooks: bool,
        filter: &LineFilter,
    ) -> Result<Option<ForwardSource>, LogError> {
        let files = segments::open_stream(dir, &self.service, self.stream)?;
        if files.files.is_empty() {
            return Ok(None);
        }
        let path = dir.display_path(&self.service);
        let source = ForwardSource::open(files, self.window, include_hooks, filter)
            .map_err(super::io_error(&path))?;
        Ok(source.current.is_some().then_some(source))
    }
}

/// The selected streams with the window `window_of` gives each (`None`:
/// skip it), narrowed to `filter`'s; empty windows are left out.
fn stream_windows(
    dir: &LogDir,
    services: &[String],
    filter: &LineFilter,
    mut window_of: impl FnMut(&str, Stream) -> Option<Window>,
) -> Result<Vec<StreamWindow>, LogError> {
    Ok(segments::select(dir, services)?
        .into_iter()
        .filter_map(|(service, stream)| {
            let window = filter.narrow(window_of(&service, stream)?);
            let empty = window.after.is_some_and(|after| after >= window.until);
            (!empty).then_some(StreamWindow {
                service,
                stream,
                window,
            })
        })
        .collect())
}

/// What [`read_page`] read.
pub(crate) struct PageRead {
    /// The timestamp of the page's last line.
    pub(crate) last: Option<u64>,
    /// Lines inside the windows are left after the page.
    pub(crate) more: bool,
    /// Per stream the page took lines from: the timestamp of its last one.
    pub(crate) taken: Vec<(String, Stream, u64)>,
}

/// Moves the oldest lines of the selected streams, each inside the window
/// `window_of` gives it and kept by `filter`, into the empty `batch` until
/// `limit`: the lines [`LogMerge::fill`] would move.
///
/// Up to [`MERGE_STREAMS`] streams are merged with all their files open.
/// Over more, each stream in turn is read while its lines would still fall
/// inside the page, and closed: one stream's files are open at a time, and
/// memory follows the page.
pub(crate) fn read_page(
    dir: &LogDir,
    services: &[String],
    include_hooks: bool,
    filter: &LineFilter,
    window_of: impl FnMut(&str, Stream) -> Option<Window>,
    batch: &mut LogBatch,
    limit: PageLimit,
) -> Result<PageRead, LogError> {
    let windows = stream_windows(dir, services, filter, window_of)?;
    if windows.len() <= MERGE_STREAMS {
        let mut merge = LogMerge::over(dir, &windows, include_hooks, filter)?;
        let last = merge.fill(batch, limit);
        let taken = merge
            .sources()
            .filter_map(|s| Some((s.service.clone(), s.stream, s.last_taken?)))
            .collect();
        return Ok(PageRead {
            last,
            more: merge.has_more(),
            taken,
        });
    }
    let mut page = OldestLines::new(limit);
    let mut more = false;
    for (index, window) in windows.iter().enumerate() {
        let Some(mut source) = window.open(dir, include_hooks, filter)? else {
            continue;
        };
        while let Some(rec) = source.record() {
            let key = (rec.timestamp_us, index);
            if !page.admits(key) {
                // The rest of this stream is newer still.
                more = true;
                break;
            }
            more |= page.keep(key, rec.hook, rec.payload);
            source.advance();
        }
    }
    Ok(page.into_batch(&windows, batch, more))
}

/// The oldest lines read so far, as many as one page takes: ordered by
/// timestamp, then by stream (the order a merge hands them out in).
struct OldestLines {
    limit: PageLimit,
    lines: BTreeMap<(u64, usize), KeptLine>,
    /// Bytes of payload in `lines`.
    text: usize,
}

struct KeptLine {
    hook: Option<Box<[u8]>>,
    payload: Box<[u8]>,
}

impl OldestLines {
    fn new(limit: PageLimit) -> Self {
        OldestLines {
            limit,
            lines: BTreeMap::new(),
            text: 0,
        }
    }

    /// Whether the lines kept make a whole page already (as
    /// [`LogMerge::fill`] judges it: a page holds at least one line).
    fn full(&self) -> bool {
        self.lines.len() >= self.limit.lines
            || (!self.lines.is_empty() && self.text >= self.limit.text_bytes)
    }

    /// Whether a line at `key` would be in the page.
    fn admits(&self, key: (u64, usize)) -> bool {
        !self.full()
            || self
                .lines
                .last_key_value()
                .is_some_and(|(last, _)| key < *last)
    }

    /// Keeps a line, then drops the newest lines the page no longer needs;
    /// returns whether any was dropped.
    fn keep(&mut self, key: (u64, usize), hook: Option<&[u8]>, payload: &[u8]) -> bool {
        self.text += payload.len();
        self.lines.insert(
            key,
            KeptLine {
                hook: hook.map(Into::into),
                payload: payload.into(),
            },
        );
        let mut dropped = false;
        while let Some((_, newest)) = self.lines.last_key_value() {
            let (before, text_before) = (self.lines.len() - 1, self.text - newest.payload.len());
            let page_without_it =
                before >= self.limit.lines || (before > 0 && text_before >= self.limit.text_bytes);
            if !page_without_it {
                break;
            }
            self.lines.pop_last();
            self.text = text_before;
            dropped = true;
        }
        dropped
    }

    fn into_batch(self, windows: &[StreamWindow], batch: &mut LogBatch, more: bool) -> PageRead {
        let mut ids: HashMap<usize, OriginIds> = HashMap::new();
        let mut taken: HashMap<usize, u64> = HashMap::new();
        let mut last = None;
        for ((ts, index), line) in self.lines {
            let window = &windows[index];
            let origins = ids.entry(index).or_default();
            let id = origin_id(
                origins,
                batch,
                &window.service,
                window.stream,
                line.hook.as_deref(),
            );
            batch.push_line(id, ts, &line.payload);
            taken.insert(index, ts);
            last = Some(ts);
        }
        let taken = taken
            .into_iter()
            .map(|(index, ts)| (windows[index].service.clone(), windows[index].stream, ts))
            .collect();
        PageRead { last, more, taken }
    }
}

impl Iterator for LogMerge {
    type Item = LogLine;

    fn next(&mut self) -> Option<LogLine> {
        let i = self.pop()?;
        let source = &mut self.sources[i];
        let rec = source.record().expect("a queued source has a record");
        let line = LogLine {
            service: source.service.clone(),
            stream: source.stream,
            origin: rec.origin(),
            timestamp_us: rec.timestamp_us,
            bytes: rec.payload.to_vec(),
        };
        source.advance();
        self.requeue(i);
        Some(line)
    }
}

/// Every line of the selected services in time order, read lazily.
pub fn read_all(
    dir: &LogDir,
    services: &[String],
    include_hooks: bool,
) -> Result<LogMerge, LogError> {
    read_after(dir, services, include_hooks, None)
}

/// Like [`read_all`], starting after the line stamped `after` (a timestamp
/// from an earlier read); starts at the beginning when `after` is `None`.
pub fn read_after(
    dir: &LogDir,
    services: &[String],
    include_hooks: bool,
    after: Option<u64>,
) -> Result<LogMerge, LogError> {
    read_matching(
        dir,
        services,
        include_hooks,
        &LineFilter::everything(),
        after,
    )
}

/// Like [`read_after`], keeping only the lines `filter` keeps: each stream
/// starts at the first line of its window, found by binary search.
pub fn read_matching(
    dir: &LogDir,
    services: &[String],
    include_hooks: bool,
    filter: &LineFilter,
    after: Option<u64>,
) -> Result<LogMerge, LogError> {
    LogMerge::open(dir, services, include_hooks, filter, |_, _| {
        Some(Window {
            after,
            until: u64::MAX,
        })
    })
}

/// The first `n` lines of the selected services, merged by timestamp.
pub fn head(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Vec<LogLine>, LogError> {
    Ok(read_all(dir, services, include_hooks)?.take(n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::encode;

    fn dir_with(files: &[(impl AsRef<str>, Vec<u8>)]) -> (tempfile::TempDir, LogDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (name, data) in files {
            std::fs::write(tmp.path().join(name.as_ref()), data).expect("write");
        }
        let dir = LogDir::open(tmp.path()).expect("open");
        (tmp, dir)
    }

    #[test]
    fn forward_reader_crosses_buffer_refills_skips_debris_and_a_write_in_progress() {
        // Lengths that put record ends on every side of the buffer refills.
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
        let (_tmp, dir) = dir_with(&[("x.stdout.log", data)]);
        let got: Vec<Vec<u8>> = read_all(&dir, &[], true)
            .expect("read")
            .map(|l| l.bytes)
            .collect();
        assert_eq!(got.len(), payloads.len());
        assert!(got == payloads, "every record, in order, exactly");
    }

    #[test]
    fn a_stream_reads_through_its_previous_segment_into_its_current_one() {
        let (mut prev, mut cur) = (Vec::new(), Vec::new());
        for ts in 1..=10u64 {
            encode(&mut prev, ts, b"-", format!("old {ts}").as_bytes());
        }
        // Debris at the end of the previous segment (a crash) is dropped, and
        // records repeated in the current one (a crash mid-migration) too.
        prev.extend_from_slice(b"00000000000000");
        for ts in 9..=20u64 {
            encode(&mut cur, ts, b"-", format!("new {ts}").as_bytes());
        }
        let (_tmp, dir) = dir_with(&[("web.stdout.log.1", prev), ("web.stdout.log", cur)]);
        let stamps = |after| -> Vec<u64> {
            read_after(&dir, &[], true, after)
                .expect("read")
                .map(|l| l.timestamp_us)
                .collect()
        };
        assert_eq!(stamps(None), (1..=20).collect::<Vec<_>>());
        assert_eq!(stamps(Some(5)), (6..=20).collect::<Vec<_>>());
        assert_eq!(stamps(Some(10)), (11..=20).collect::<Vec<_>>());
        assert_eq!(stamps(Some(15)), (16..=20).collect::<Vec<_>>());
        assert_eq!(stamps(Some(20)), Vec::<u64>::new());
        let texts: Vec<String> = read_all(&dir, &[], true)
            .expect("read")
            .map(|l| String::from_utf8(l.bytes).unwrap())
            .collect();
        assert_eq!(texts[9], "old 10");
        assert_eq!(texts[10], "new 11");
    }

    #[test]
    fn a_window_ends_each_stream_at_its_own_timestamp() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for ts in 1..=10u64 {
            encode(if ts % 2 == 0 { &mut a } else { &mut b }, ts, b"-", b"x");
        }
        let (_tmp, dir) = dir_with(&[("a.stdout.log", a), ("b.stdout.log", b)]);
        let merge = LogMerge::open(&dir, &[], true, &LineFilter::everything(), |service, _| {
            Some(match service {
                "a" => Window {
                    after: Some(2),
                    until: 6,
                },
                _ => Window {
                    after: None,
                    until: 3,
                },
            })
        })
        .expect("open");
        let stamps: Vec<u64> = merge.map(|l| l.timestamp_us).collect();
        assert_eq!(stamps, [1, 3, 4, 6]);
    }

    #[test]
    fn over_many_streams_a_page_holds_one_stream_open_and_reads_what_a_merge_reads() {
        // More streams than a merge may hold open; timestamps tie across
        // streams, lines sit in previous segments too, some are hooks', and
        // their lengths vary so the byte limit ends pages.
        let streams = MERGE_STREAMS + 44;
        let mut files = Vec::new();
        for s in 0..streams {
            let (mut current, mut previous) = (Vec::new(), Vec::new());
            for k in 0..8u64 {
                let ts = 1 + k * 7 + (s as u64 * 13) % 50;
                let tag: &[u8] = if (ts + k).is_multiple_of(5) {
                    b"pre_start"
                } else {
                    b"-"
                };
                let file = if k < 3 { &mut previous } else { &mut current };
                let text = format!("s{s} line {k} {}", "x".repeat((s * 31 + k as usize) % 90));
                encode(file, ts, tag, text.as_bytes());
            }
            files.push((format!("s{s}.stdout.log"), current));
            files.push((format!("s{s}.stdout.log.1"), previous));
        }
        let (_tmp, dir) = dir_with(&files);
        // Each stream ends at its own timestamp, as a follow's backlog does.
        let window = |after: Option<u64>| {
            move |service: &str, _| {
                let s: u64 = service[1..].parse().expect("numbered");
                let until = if s.is_multiple_of(10) {
                    30 + s % 20
                } else {
                    u64::MAX
                };
                Some(Window { after, until })
            }
        };
        let everything = LineFilter::everything();
        for (lines, text_bytes, hooks) in [
            (1, usize::MAX, true),
            (37, usize::MAX, true),
            (37, usize::MAX, false),
            (500, 700, true),
            (10_000, usize::MAX, true),
            (0, usize::MAX, true),
        ] {
            let limit = PageLimit { lines, text_bytes };
            let (mut after, mut pages, mut total) = (None, 0, 0);
            // A page at a time, as a cursor goes; the smallest pages only
            // over the first few dozen.
            while pages < 60 {
                let windows =
                    stream_windows(&dir, &[], &everything, window(after)).expect("select");
                assert!(
                    windows.len() > MERGE_STREAMS,
                    "the page is read one stream at a time"
                );
                let mut merge =
                    LogMerge::open(&dir, &[], hooks, &everything, window(after)).expect("merge");
                let mut merged = LogBatch::new();
                let merged_last = merge.fill(&mut merged, limit);
                let mut merged_taken: Vec<(String, Stream, u64)> = merge
                    .sources()
                    .filter_map(|s| Some((s.service.clone(), s.stream, s.last_taken?)))
                    .collect();

                let mut read = LogBatch::new();
                let mut page = read_page(
                    &dir,
                    &[],
                    hooks,
                    &everything,
                    window(after),
                    &mut read,
                    limit,
                )
                .expect("page");
                let case =
                    format!("lines {lines}, bytes {text_bytes}, hooks {hooks}, page {pages}");
                assert_eq!(read.to_lines(), merged.to_lines(), "{case}");
                assert_eq!(page.last, merged_last, "{case}");
                assert_eq!(page.more, merge.has_more(), "{case}");
                page.taken.sort();
                merged_taken.sort();
                assert_eq!(page.taken, merged_taken, "{case}");
                assert!(read.len() <= lines.max(1));

                total += read.len();
                pages += 1;
                if !page.more || page.last.is_none() {
                    break;
                }
                after = page.last;
            }
            if lines == 10_000 {
                assert_eq!(pages, 1);
                assert!(
                    total > 5 * streams,
                    "every line but the cut-off ones: {total}"
                );
            }
            if let Some(fewest_pages) = total.checked_div(lines) {
                assert!(total > 0 && pages >= fewest_pages);
            }
            if lines == 37 && hooks {
                assert!(pages > 30, "many pages follow one another: {pages}");
            }
        }
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
        let (_tmp, dir) = dir_with(&[("web.stdout.log", out), ("web.stderr.log", err)]);
        let mut merge = read_all(&dir, &[], true).expect("read");
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
}
