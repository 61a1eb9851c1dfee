//! Capture: a pump task drains one pipe (a service's or a hook's stdout or
//! stderr) until EOF, cuts the bytes into lines, stores them and publishes
//! them to followers.
//!
//! Each pipe read becomes one batch: its complete lines are stamped, encoded
//! and written with a single `write` on the blocking pool, and the pump reads
//! again only when that is done, so with `buffer_size: 0` a line is in the
//! file before the next read. The hop to the blocking pool costs tens of
//! microseconds per read (reads are up to 1 MiB, so it is amortised when the
//! service is chatty) and keeps a slow disk, a `max_size` rewrite or a writer
//! lock held by a hook's pump off the tokio workers that drain other pipes.
//! Measured with `examples/log_throughput.rs` (1M lines of 90 bytes): writing
//! inline in the task and hopping to the blocking pool were within noise of
//! each other (190-300 ms on a busy 2-core machine), so isolation wins.
//!
//! A partial last line is stored at EOF; a line longer than
//! [`MAX_LINE_BYTES`] is stored as several records. With a buffer, pending
//! lines are written when the pipe has been idle for [`IDLE_FLUSH`], at EOF
//! and on [`LogSink::flush`].

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

use super::record::{self, MAX_LINE_BYTES};
use super::writer::FileWriter;
use super::{lock, LogLine, Origin, StoreInner, Stream};

/// How long a pipe must stay silent before buffered lines are written.
pub const IDLE_FLUSH: Duration = Duration::from_millis(150);

/// Bytes asked for per pipe read.
const READ_CHUNK: usize = 1024 * 1024;

/// What one pump stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpReport {
    pub lines: u64,
    pub bytes: u64,
}

/// Where a pump puts its lines: one service's stream, one origin.
pub struct LogSink {
    store: Arc<StoreInner>,
    service: String,
    stream: Stream,
    origin: Origin,
    tag: Vec<u8>,
    /// `None` when this stream is not stored (`store.stdout: false`).
    writer: Option<Arc<Mutex<FileWriter>>>,
}

/// Lines of one pipe read: payloads are `data[start..end]`.
pub(crate) struct LineBatch {
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

impl LineBatch {
    fn payloads(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.ranges.iter().map(|&(s, e)| &self.data[s..e])
    }
}

impl LogSink {
    pub(crate) fn new(
        store: Arc<StoreInner>,
        service: &str,
        stream: Stream,
        origin: Origin,
        writer: Option<Arc<Mutex<FileWriter>>>,
    ) -> Self {
        LogSink {
            store,
            service: service.to_string(),
            stream,
            tag: record::origin_tag(&origin).into_owned(),
            origin,
            writer,
        }
    }

    /// Stores and publishes lines that did not come through a pipe (a hook's
    /// output, Kepler's own notes), each split at newlines. Blocking, but a
    /// few lines cost one small write.
    pub fn write_lines<'a>(&self, lines: impl IntoIterator<Item = &'a [u8]>) {
        let mut batch = LineBatch {
            data: Vec::new(),
            ranges: Vec::new(),
        };
        for line in lines {
            for part in line.split(|b| *b == b'\n') {
                for chunk in part
                    .chunks(MAX_LINE_BYTES)
                    .chain(part.is_empty().then_some(&[][..]))
                {
                    let start = batch.data.len();
                    batch.data.extend_from_slice(chunk);
                    batch.ranges.push((start, batch.data.len()));
                }
            }
        }
        if batch.ranges.is_empty() {
            return;
        }
        let first = self.store(now_us(), &batch);
        self.publish(first, &batch);
    }

    /// Stamps and stores a batch; returns its first timestamp. Blocking.
    fn store(&self, now_us: u64, batch: &LineBatch) -> u64 {
        let count = batch.ranges.len() as u64;
        let Some(writer) = &self.writer else {
            return self.store.clock.reserve(now_us, count);
        };
        let mut writer = lock(writer);
        // Stamped under the file's lock so timestamps increase along the file.
        let first_ts = self.store.clock.reserve(now_us, count);
        if writer.append(first_ts, &self.tag, batch.payloads()) {
            self.store.written.send_modify(|n| *n += 1);
        }
        first_ts
    }

    fn publish(&self, first_ts: u64, batch: &LineBatch) {
        let publisher = &self.store.publisher;
        if !publisher.has_followers() {
            return;
        }
        let lines = batch
            .payloads()
            .enumerate()
            .map(|(i, bytes)| LogLine {
                service: self.service.clone(),
                stream: self.stream,
                origin: self.origin.clone(),
                timestamp_us: first_ts + i as u64,
                bytes: bytes.to_vec(),
            })
            .collect();
        publisher.publish(lines);
    }

    /// Whether buffered lines wait for a write. Never blocks the tokio
    /// worker: a writer busy elsewhere counts as pending (the idle flush
    /// then finds nothing or writes what is there).
    fn has_pending(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| match w.try_lock() {
            Ok(writer) => writer.has_pending(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().has_pending(),
            Err(TryLockError::WouldBlock) => true,
        })
    }

    /// Writes this file's buffered lines. Blocking.
    pub fn flush(&self) {
        if let Some(writer) = &self.writer {
            if lock(writer).flush() {
                self.store.written.send_modify(|n| *n += 1);
            }
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Pumps a pipe until EOF; see [`pump_reader`]. Asks the kernel for a 1 MiB
/// pipe first (best effort) so a chatty service fills bigger batches.
pub async fn pump(pipe: pipe::Receiver, sink: LogSink) -> PumpReport {
    // F_SETPIPE_SZ only changes the pipe's capacity; failure (over the
    // unprivileged limit) leaves the default 64 KiB, which still works.
    // SAFETY: fcntl on a file descriptor we own, no pointers passed.
    unsafe {
        libc::fcntl(
            pipe.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            READ_CHUNK as libc::c_int,
        )
    };
    pump_reader(pipe, sink).await
}

/// Reads `reader` until EOF (or a read error, which is logged), storing and
/// publishing every line. Never fails: disk errors are logged by the writer
/// and the pipe keeps draining so the service never blocks on its output.
pub async fn pump_reader<R: AsyncRead + Unpin>(mut reader: R, sink: LogSink) -> PumpReport {
    let sink = Arc::new(sink);
    let mut report = PumpReport::default();
    let mut data: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // data[..scanned] is a partial line: no `\n` in it.
    let mut scanned = 0;
    loop {
        data.reserve(READ_CHUNK.saturating_sub(data.len()));
        let read = if sink.has_pending() {
            match tokio::time::timeout(IDLE_FLUSH, reader.read_buf(&mut data)).await {
                Ok(read) => read,
                Err(_idle) => {
                    run_blocking(&sink, |sink| sink.flush()).await;
                    continue;
                }
            }
        } else {
            reader.read_buf(&mut data).await
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(service = %sink.service, stream = sink.stream.as_str(), "reading output pipe failed: {e}; storing what was read");
                break;
            }
        }
        let (ranges, consumed) = split_lines(&data, scanned, false);
        scanned = data.len() - consumed;
        if ranges.is_empty() {
            continue;
        }
        let batch = LineBatch {
            data: std::mem::take(&mut data),
            ranges,
        };
        let batch = store_and_publish(&sink, batch, &mut report).await;
        data = batch.data;
        data.drain(..consumed);
    }
    let (ranges, _) = split_lines(&data, scanned, true);
    if !ranges.is_empty() {
        store_and_publish(&sink, LineBatch { data, ranges }, &mut report).await;
    }
    run_blocking(&sink, |sink| sink.flush()).await;
    report
}

async fn store_and_publish(
    sink: &Arc<LogSink>,
    batch: LineBatch,
    report: &mut PumpReport,
) -> LineBatch {
    let now = now_us();
    report.lines += batch.ranges.len() as u64;
    report.bytes += batch
        .ranges
        .iter()
        .map(|(s, e)| (e - s) as u64)
        .sum::<u64>();
    let (batch, first_ts) = run_blocking(sink, move |sink| {
        let first_ts = sink.store(now, &batch);
        (batch, first_ts)
    })
    .await;
    sink.publish(first_ts, &batch);
    batch
}

/// Runs `f` on the blocking pool. A panic there is a bug, not an I/O error,
/// so it is re-raised here rather than hidden.
async fn run_blocking<T: Send + 'static>(
    sink: &Arc<LogSink>,
    f: impl FnOnce(&LogSink) -> T + Send + 'static,
) -> T {
    let sink = sink.clone();
    match tokio::task::spawn_blocking(move || f(&sink)).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Cuts `data` into line payload ranges. `data[..scanned]` is known to hold no
/// `\n`. Lines longer than [`MAX_LINE_BYTES`] become several ranges; so does a
/// trailing partial line once it exceeds that. At `eof` the partial line is a
/// range too. Returns the ranges and how many bytes of `data` they consumed.
pub(crate) fn split_lines(data: &[u8], scanned: usize, eof: bool) -> (Vec<(usize, usize)>, usize) {
    let mut ranges = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', &data[scanned..]) {
        let end = scanned + nl;
        push_pieces(&mut ranges, start, end);
        start = end + 1;
    }
    let rest = data.len() - start;
    if eof && rest > 0 {
        push_pieces(&mut ranges, start, data.len());
        start = data.len();
    } else if rest > MAX_LINE_BYTES {
        // Keep the tail under the limit for later; it may end the line.
        let whole = rest / MAX_LINE_BYTES * MAX_LINE_BYTES;
        let cut = if whole == rest {
            whole - MAX_LINE_BYTES
        } else {
            whole
        };
        push_pieces(&mut ranges, start, start + cut);
        start += cut;
    }
    (ranges, start)
}

fn push_pieces(ranges: &mut Vec<(usize, usize)>, start: usize, end: usize) {
    if start == end {
        ranges.push((start, end));
        return;
    }
    let mut s = start;
    while s < end {
        let e = (s + MAX_LINE_BYTES).min(end);
        ranges.push((s, e));
        s = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(data: &[u8], eof: bool) -> (Vec<usize>, usize) {
        let (ranges, consumed) = split_lines(data, 0, eof);
        (ranges.iter().map(|(s, e)| e - s).collect(), consumed)
    }

    #[test]
    fn complete_lines_are_split_and_the_partial_one_waits() {
        assert_eq!(pieces(b"a\n\nbc\nde", false), (vec![1, 0, 2], 6));
        assert_eq!(pieces(b"a\n\nbc\nde", true), (vec![1, 0, 2, 2], 8));
        assert_eq!(pieces(b"", true), (vec![], 0));
    }

    #[test]
    fn over_long_lines_become_max_length_records() {
        let mut line = vec![b'x'; 3 * MAX_LINE_BYTES + 10];
        line.push(b'\n');
        assert_eq!(
            pieces(&line, false).0,
            vec![MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES, 10]
        );
        // Without a newline yet, whole pieces go, keeping at least one byte
        // and at most MAX_LINE_BYTES pending.
        let partial = vec![b'x'; 2 * MAX_LINE_BYTES];
        assert_eq!(
            pieces(&partial, false),
            (vec![MAX_LINE_BYTES], MAX_LINE_BYTES)
        );
        let partial = vec![b'x'; 2 * MAX_LINE_BYTES + 1];
        assert_eq!(
            pieces(&partial, false),
            (vec![MAX_LINE_BYTES, MAX_LINE_BYTES], 2 * MAX_LINE_BYTES)
        );
        // A line of exactly MAX_LINE_BYTES is one record.
        let mut exact = vec![b'x'; MAX_LINE_BYTES];
        assert_eq!(pieces(&exact, false), (vec![], 0));
        exact.push(b'\n');
        assert_eq!(pieces(&exact, false).0, vec![MAX_LINE_BYTES]);
    }

    #[test]
    fn scanning_resumes_after_the_known_partial_line() {
        let data = b"abc\ndef";
        assert_eq!(split_lines(data, 3, false), (vec![(0, 3)], 4));
    }
}
