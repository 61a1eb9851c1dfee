//! Reading from the newest record back: `--tail`, where a long tail starts,
//! and the newest timestamp of a directory. Each stream is walked backwards
//! in blocks through its current segment and then its previous one, and the
//! streams are merged newest first, so the cost follows the number of lines
//! asked for, not the size of the files, and memory is one block per stream
//! whatever that number is. Over more streams than a merge may hold open
//! (one per service's output, thousands of them), the streams are walked one
//! after another instead, each while it still has lines among the newest,
//! so one stream's files and block are held at a time and the lines kept
//! are what memory follows.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::dir::LogDir;
use super::filter::LineFilter;
use super::record::{self, Record};
use super::search;
use super::segments::{self, StreamFiles, MERGE_STREAMS};
use super::{LogError, LogLine, Stream};

/// Bytes read per step when walking a file backwards.
const BACK_BLOCK: usize = 64 * 1024;

/// Records of a file from the last to the first.
pub(crate) struct BackwardRecords {
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
    pub(crate) fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self::ending_at(file, len))
    }

    /// The records that end at or before `end`, a record boundary.
    pub(crate) fn ending_at(file: File, end: u64) -> Self {
        let pos = end;
        BackwardRecords {
            file,
            pos,
            buf: Vec::new(),
            keep: 0,
            trimmed: false,
        }
    }

    /// Prepends the block before `pos`. A file that shrank under us (it was
    /// cleared) reads as ending where it now ends.
    fn read_block(&mut self) -> io::Result<()> {
        let size = (self.pos as usize).min(BACK_BLOCK);
        let start = self.pos - size as u64;
        let mut block = vec![0; size + self.buf.len()];
        if let Err(e) = self.file.read_exact_at(&mut block[..size], start) {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                return Err(e);
            }
            self.buf.clear();
            self.keep = 0;
            self.pos = 0;
            return Ok(());
        }
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
    pub(crate) fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
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

/// One stream read backwards over its segments, with the record at hand
/// decoded (and copied, since the merge needs it while others advance).
struct BackwardStream {
    service: String,
    stream: Stream,
    /// Newest segment last, so `pop` gives the next one to walk.
    pending: Vec<File>,
    records: Option<BackwardRecords>,
    include_hooks: bool,
    /// Only records it keeps are held; its window ends the walk.
    filter: LineFilter,
    /// The newest record not yet taken.
    head: Option<Held>,
    /// Timestamp of the last record walked: an older segment repeating it
    /// (a crash in the middle of a migration) is skipped.
    oldest_seen: u64,
}

struct Held {
    timestamp_us: u64,
    hook: Option<Box<[u8]>>,
    payload: Vec<u8>,
}

impl BackwardStream {
    fn new(files: StreamFiles, include_hooks: bool, filter: &LineFilter) -> Self {
        BackwardStream {
            service: files.service,
            stream: files.stream,
            pending: files.files,
            records: None,
            include_hooks,
            filter: filter.clone(),
            head: None,
            oldest_seen: u64::MAX,
        }
    }

    /// The stream's segments in `dir`, opened now.
    fn open(
        dir: &LogDir,
        service: &str,
        stream: Stream,
        include_hooks: bool,
        filter: &LineFilter,
    ) -> Result<Self, LogError> {
        let files = segments::open_stream(dir, service, stream)?;
        Ok(BackwardStream::new(files, include_hooks, filter))
    }

    /// [`Self::advance`], with an error that names the service's logs.
    fn step(&mut self, dir: &LogDir, keep_bytes: bool) -> Result<(), LogError> {
        self.advance(keep_bytes)
            .map_err(|e| super::io_error(&dir.display_path(&self.service))(e))
    }

    /// Moves `head` to the next older wanted record; `keep_bytes` false
    /// keeps only its timestamp.
    fn advance(&mut self, keep_bytes: bool) -> io::Result<()> {
        self.head = None;
        loop {
            let records = match &mut self.records {
                Some(records) => records,
                None => match self.pending.pop() {
                    // With an end to the window, the walk starts there,
                    // found by binary search.
                    Some(file) => self.records.insert(match self.filter.until {
                        Some(until) => {
                            let end = search::first_record_after(&file, until)?;
                            BackwardRecords::ending_at(file, end)
                        }
                        None => BackwardRecords::new(file)?,
                    }),
                    None => return Ok(()),
                },
            };
            let Some(raw) = records.next_record()? else {
                self.records = None;
                continue;
            };
            let Some(rec) = record::parse(raw) else {
                continue;
            };
            if rec.timestamp_us >= self.oldest_seen {
                continue;
            }
            self.oldest_seen = rec.timestamp_us;
            if self
                .filter
                .since
                .is_some_and(|since| rec.timestamp_us < since)
            {
                // Everything older is before the window too.
                self.pending.clear();
                self.records = None;
                return Ok(());
            }
            if (self.include_hooks || rec.hook.is_none())
                && self.filter.in_window(rec.timestamp_us)
                && self.filter.matches(rec.payload)
            {
                self.head = Some(Held {
                    timestamp_us: rec.timestamp_us,
                    hook: if keep_bytes {
                        rec.hook.map(Into::into)
                    } else {
                        None
                    },
                    payload: if keep_bytes {
                        rec.payload.to_vec()
                    } else {
                        Vec::new()
                    },
                });
                return Ok(());
            }
        }
    }
}

/// Heap entry: the stream whose held record is newest comes out first.
struct Newest(u64, usize);

impl PartialEq for Newest {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Newest {}
impl PartialOrd for Newest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Newest {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

/// Hands the newest `n` wanted records of the selected services to `take`
/// (with the record's service and stream), newest first, merged over every
/// stream.
fn walk_newest(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
    filter: &LineFilter,
    keep_bytes: bool,
    take: impl FnMut(&str, Stream, Held),
) -> Result<(), LogError> {
    if n == 0 {
        return Ok(());
    }
    let selected = segments::select(dir, services)?;
    let walk = Walk {
        dir,
        n,
        include_hooks,
        filter,
        keep_bytes,
    };
    if selected.len() <= MERGE_STREAMS {
        walk.merge(selected, take)
    } else {
        walk.collect(selected, take)
    }
}

/// What [`walk_newest`] was asked for.
struct Walk<'a> {
    dir: &'a LogDir,
    n: usize,
    include_hooks: bool,
    filter: &'a LineFilter,
    keep_bytes: bool,
}

impl Walk<'_> {
    fn open(&self, service: &str, stream: Stream) -> Result<BackwardStream, LogError> {
        BackwardStream::open(self.dir, service, stream, self.include_hooks, self.filter)
    }

    /// As a merge: every stream's files open at once, one record held per
    /// stream, so what is read follows `n`.
    fn merge(
        &self,
        selected: Vec<(String, Stream)>,
        mut take: impl FnMut(&str, Stream, Held),
    ) -> Result<(), LogError> {
        let mut streams = Vec::new();
        let mut heap = BinaryHeap::new();
        for (service, stream) in selected {
            let mut walker = self.open(&service, stream)?;
            walker.step(self.dir, self.keep_bytes)?;
            if let Some(head) = &walker.head {
                heap.push(Newest(head.timestamp_us, streams.len()));
            }
            streams.push(walker);
        }
        for _ in 0..self.n {
            let Some(Newest(_, i)) = heap.pop() else {
                break;
            };
            let walker = &mut streams[i];
            let held = walker.head.take().expect("a queued stream holds a record");
            take(&walker.service, walker.stream, held);
            walker.step(self.dir, self.keep_bytes)?;
            if let Some(head) = &walker.head {
                heap.push(Newest(head.timestamp_us, i));
            }
        }
        Ok(())
    }

    /// Over many streams: a merge would hold every stream's files (two
    /// descriptors and a block each: for ten thousand services, more files
    /// than a daemon may have open). Instead each stream in turn is walked
    /// back while its records are newer than the `n`th newest found so far,
    /// and closed; the newest `n` are kept, in memory that follows `n`.
    fn collect(
        &self,
        selected: Vec<(String, Stream)>,
        mut take: impl FnMut(&str, Stream, Held),
    ) -> Result<(), LogError> {
        // Its top is the oldest record kept.
        let mut kept: BinaryHeap<Kept> = BinaryHeap::with_capacity(self.n.min(4096) + 1);
        for (index, (service, stream)) in selected.iter().enumerate() {
            let mut walker = self.open(service, *stream)?;
            loop {
                walker.step(self.dir, self.keep_bytes)?;
                let Some(held) = walker.head.take() else {
                    break;
                };
                let full = kept.len() == self.n;
                if full
                    && kept
                        .peek()
                        .is_some_and(|oldest| held.timestamp_us <= oldest.0)
                {
                    // The rest of this stream is older still.
                    break;
                }
                kept.push(Kept(held.timestamp_us, index, held));
                if kept.len() > self.n {
                    kept.pop();
                }
            }
        }
        // Ascending by this order is newest first.
        for Kept(_, index, held) in kept.into_sorted_vec() {
            let (service, stream) = &selected[index];
            take(service, *stream, held);
        }
        Ok(())
    }
}

/// A record [`Walk::collect`] keeps: ordered so the oldest is greatest.
struct Kept(u64, usize, Held);

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.0, other.1).cmp(&(self.0, self.1))
    }
}

/// The newest `n` lines of the selected services (empty: all) over stdout and
/// stderr, merged by timestamp, oldest first.
pub fn tail(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Vec<LogLine>, LogError> {
    tail_matching(dir, services, n, include_hooks, &LineFilter::everything())
}

/// Like [`tail`], over the lines `filter` keeps: the newest `n` of those.
pub fn tail_matching(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
    filter: &LineFilter,
) -> Result<Vec<LogLine>, LogError> {
    let mut lines = Vec::new();
    walk_newest(
        dir,
        services,
        n,
        include_hooks,
        filter,
        true,
        |service, stream, held| {
            let rec = Record {
                timestamp_us: held.timestamp_us,
                hook: held.hook.as_deref(),
                payload: &[],
            };
            lines.push(LogLine {
                service: service.to_string(),
                stream,
                origin: rec.origin(),
                timestamp_us: held.timestamp_us,
                bytes: held.payload,
            });
        },
    )?;
    lines.reverse();
    Ok(lines)
}

/// The timestamp of the oldest of the newest `n` lines, where a tail of
/// `n` lines starts; `None` when there are no lines. Its memory does not
/// depend on `n`, except over more than [`MERGE_STREAMS`] streams (some 64
/// bytes per line).
pub fn tail_start(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
) -> Result<Option<u64>, LogError> {
    Ok(tail_window(dir, services, n, include_hooks, &LineFilter::everything())?.0)
}

/// Like [`tail_start`], over the lines `filter` keeps.
pub fn tail_start_matching(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
    filter: &LineFilter,
) -> Result<Option<u64>, LogError> {
    Ok(tail_window(dir, services, n, include_hooks, filter)?.0)
}

/// [`tail_start_matching`] and how many lines the tail holds (fewer than
/// `n` when fewer are stored).
pub(crate) fn tail_window(
    dir: &LogDir,
    services: &[String],
    n: usize,
    include_hooks: bool,
    filter: &LineFilter,
) -> Result<(Option<u64>, usize), LogError> {
    let mut oldest = None;
    let mut count = 0;
    walk_newest(
        dir,
        services,
        n,
        include_hooks,
        filter,
        false,
        |_, _, held| {
            oldest = Some(held.timestamp_us);
            count += 1;
        },
    )?;
    Ok((oldest, count))
}

/// Each selected stream's newest timestamp, hook lines included.
pub(crate) fn newest_per_stream(
    dir: &LogDir,
    services: &[String],
) -> Result<Vec<(String, Stream, u64)>, LogError> {
    let mut newest = Vec::new();
    for (service, stream) in segments::select(dir, services)? {
        let mut walker =
            BackwardStream::open(dir, &service, stream, true, &LineFilter::everything())?;
        walker.step(dir, false)?;
        if let Some(head) = walker.head {
            newest.push((service, stream, head.timestamp_us));
        }
    }
    Ok(newest)
}

/// The newest timestamp stored in `dir` (0 when empty).
pub(crate) fn newest_timestamp(dir: &LogDir) -> Result<u64, LogError> {
    let mut newest = 0;
    walk_newest(
        dir,
        &[],
        1,
        true,
        &LineFilter::everything(),
        false,
        |_, _, held| {
            newest = held.timestamp_us;
        },
    )?;
    Ok(newest)
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

    #[test]
    fn backward_reader_crosses_blocks_and_ignores_a_write_in_progress() {
        let big = vec![b'b'; BACK_BLOCK + 100];
        let recs: Vec<(u64, &[u8])> = vec![(1, b"first"), (2, &big), (3, b""), (4, b"last")];
        let (_dir, file) = file_with(&recs, b"0000000000000005 - parti");
        let mut records = BackwardRecords::new(file).expect("meta");
        let mut got = Vec::new();
        while let Some(raw) = records.next_record().expect("read") {
            got.push(record::parse(raw).expect("record").payload.to_vec());
        }
        assert_eq!(got, vec![b"last".to_vec(), vec![], big, b"first".to_vec()]);
    }

    fn dir_with(files: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, LogDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (name, data) in files {
            std::fs::write(tmp.path().join(name), data).expect("write");
        }
        let dir = LogDir::open(tmp.path()).expect("open");
        (tmp, dir)
    }

    #[test]
    fn many_streams_give_the_tail_a_merge_gives_holding_one_at_a_time() {
        // More streams than a merge may hold open: lines interleaved in
        // time, some in previous segments, some from hooks.
        let streams = MERGE_STREAMS + 44;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for s in 0..streams {
            let (mut current, mut previous) = (Vec::new(), Vec::new());
            for k in 0..6u64 {
                let ts = 1 + k * streams as u64 + ((s * 37) % streams) as u64;
                let tag: &[u8] = if ts.is_multiple_of(11) {
                    b"pre_start"
                } else {
                    b"-"
                };
                let file = if k < 2 { &mut previous } else { &mut current };
                encode(file, ts, tag, format!("s{s} line {k}").as_bytes());
            }
            files.push((format!("s{s}.stdout.log"), current));
            files.push((format!("s{s}.stdout.log.1"), previous));
        }
        let named: Vec<(&str, Vec<u8>)> = files
            .iter()
            .map(|(name, data)| (name.as_str(), data.clone()))
            .collect();
        let (_tmp, dir) = dir_with(&named);
        let selected = segments::select(&dir, &[]).expect("select");
        assert!(selected.len() > MERGE_STREAMS);
        for (n, hooks) in [
            (1, true),
            (50, true),
            (50, false),
            (3 * streams, true),
            (10_000, false),
        ] {
            let everything = LineFilter::everything();
            let mut merged = Vec::new();
            let walk = Walk {
                dir: &dir,
                n,
                include_hooks: hooks,
                filter: &everything,
                keep_bytes: true,
            };
            walk.merge(selected.clone(), |service, _, held| {
                merged.push((service.to_string(), held.timestamp_us, held.payload))
            })
            .expect("merge");
            let mut collected = Vec::new();
            walk_newest(
                &dir,
                &[],
                n,
                hooks,
                &everything,
                true,
                |service, _, held| {
                    collected.push((service.to_string(), held.timestamp_us, held.payload))
                },
            )
            .expect("walk");
            assert_eq!(collected, merged, "n = {n}, hooks = {hooks}");
            assert!(merged.len() == n.min(6 * streams) || !hooks);
        }
        assert_eq!(newest_timestamp(&dir).expect("read"), 6 * streams as u64);
        let start = tail_start(&dir, &[], 100, true).expect("read");
        assert_eq!(start, Some(6 * streams as u64 - 99));
    }

    #[test]
    fn a_tail_starts_at_the_oldest_of_the_newest_lines_over_all_files_and_segments() {
        let (mut out, mut out_prev, mut err) = (Vec::new(), Vec::new(), Vec::new());
        for ts in 1..=10u64 {
            let file = match ts {
                _ if ts % 2 == 0 => &mut err,
                1..=4 => &mut out_prev,
                _ => &mut out,
            };
            let tag: &[u8] = if ts == 9 { b"post_exit" } else { b"-" };
            encode(file, ts, tag, b"x");
        }
        let (_tmp, dir) = dir_with(&[
            ("a.stdout.log", out),
            ("a.stdout.log.1", out_prev),
            ("a.stderr.log", err),
        ]);
        let start = |n, hooks| tail_start(&dir, &[], n, hooks).expect("read");
        assert_eq!(start(3, true), Some(8));
        assert_eq!(start(3, false), Some(7), "the hook's line does not count");
        assert_eq!(start(8, true), Some(3), "into the previous segment");
        assert_eq!(start(100, true), Some(1));
        assert_eq!(start(usize::MAX, true), Some(1));
        assert_eq!(start(0, true), None);
        let lines = tail(&dir, &[], 8, true).expect("read");
        let stamps: Vec<u64> = lines.iter().map(|l| l.timestamp_us).collect();
        assert_eq!(stamps, (3..=10).collect::<Vec<_>>());
        assert_eq!(newest_timestamp(&dir).expect("read"), 10);
        let (_tmp, empty) = dir_with(&[]);
        assert_eq!(tail_start(&empty, &[], 5, true).expect("read"), None);
        assert_eq!(newest_timestamp(&empty).expect("read"), 0);
    }
}
