//! Capture: a pump task drains one pipe (a service's stdout or stderr) until
//! EOF, cuts the bytes into lines, stores them and publishes them to
//! followers.
//!
//! Every pump of the daemon runs on one thread of its own (`kepler-logs`, a
//! current-thread runtime), so copying output to disk never competes with
//! requests for the daemon's workers: `ps` or `stop` answer as fast while
//! services flood. A pump waits until its pipe is readable, then, without
//! yielding, reads at most [`READ_CHUNK`] bytes, stamps and encodes the
//! complete lines, writes them with one `write` and publishes them; then it
//! lets the other pumps have their turn. So a chatty service gets one read's
//! worth per turn, and the bytes between its pipe and its file never exceed
//! one read plus a partial line. When the disk or this thread cannot keep
//! up, pipes fill and the services writing to them block: that is the
//! backpressure, nothing queues up in the daemon.
//!
//! The read and encode buffers belong to the thread, not to the pumps: an
//! idle service costs its pump's task and nothing more, whatever its output
//! did before. Pipes keep the kernel's default size until a read finds one
//! full; then it grows to [`CHATTY_PIPE`] so a chatty service blocks less.
//!
//! A partial last line is stored at EOF; a line longer than a record may
//! hold is stored as several records. With a buffer, pending lines are
//! written when the pipe has been idle for [`IDLE_FLUSH`], at EOF and on
//! [`LogSink::flush`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use super::held::{self, HeldPipe};
use super::record::{self, MAX_LINE_BYTES};
use super::writer::FileWriter;
use super::{lock, Origin, StoreInner, Stream};
use crate::process::descriptors::keep_high;

/// How long a pipe must stay silent before buffered lines are written.
pub const IDLE_FLUSH: Duration = Duration::from_millis(150);

/// Bytes asked for per pipe read, and so per turn of a pump.
const READ_CHUNK: usize = 64 * 1024;
/// The kernel's default pipe capacity: a read this large found the pipe full.
const DEFAULT_PIPE: usize = 64 * 1024;
/// Pipe capacity of a service whose pipe was found full.
const CHATTY_PIPE: usize = 256 * 1024;
/// A partial line's buffer larger than this is given back once empty.
const KEEP_CARRY: usize = 4 * 1024;

/// What one pump stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpReport {
    pub lines: u64,
    pub bytes: u64,
}

/// Where a pump puts its lines: one service's stream, one origin.
pub struct LogSink {
    store: Arc<StoreInner>,
    service: Arc<str>,
    stream: Stream,
    origin: Origin,
    tag: Vec<u8>,
    /// `None` when this stream is not stored (`store.stdout: false`).
    writer: Option<Arc<Mutex<FileWriter>>>,
    /// Longest payload of one record, so records fit the stream's segments.
    max_payload: usize,
}

/// Buffers of the thread a pump runs on, shared by its pumps.
#[derive(Default)]
struct Scratch {
    read: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    encoded: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl LogSink {
    pub(crate) fn new(
        store: Arc<StoreInner>,
        service: &str,
        stream: Stream,
        origin: Origin,
        writer: Option<Arc<Mutex<FileWriter>>>,
    ) -> Self {
        let tag = record::origin_tag(&origin).into_owned();
        let max_payload = writer
            .as_ref()
            .map_or(MAX_LINE_BYTES, |w| lock(w).max_payload(&tag));
        LogSink {
            store,
            service: service.into(),
            stream,
            tag,
            origin,
            writer,
            max_payload,
        }
    }

    /// Stores and publishes lines that did not come through a pipe (a hook's
    /// output, Kepler's own notes), each split at newlines. Blocking, but a
    /// few lines cost one small write.
    pub fn write_lines<'a>(&self, lines: impl IntoIterator<Item = &'a [u8]>) {
        let mut data = Vec::new();
        let mut ranges = Vec::new();
        for line in lines {
            for part in line.split(|b| *b == b'\n') {
                let start = data.len();
                data.extend_from_slice(part);
                push_pieces(&mut ranges, start, data.len(), self.max_payload);
            }
        }
        if ranges.is_empty() {
            return;
        }
        self.store_and_publish(&data, &ranges, &mut Vec::new());
    }

    /// Stamps, stores and publishes the lines `data[start..end]` of
    /// `ranges`. Blocking (one write, under the stream's lock).
    fn store_and_publish(&self, data: &[u8], ranges: &[(usize, usize)], encoded: &mut Vec<u8>) {
        let payloads = ranges.iter().map(|&(s, e)| &data[s..e]);
        let count = ranges.len() as u64;
        let now = now_us();
        let first_ts = match &self.writer {
            None => self.store.clock.reserve(now, count),
            Some(writer) => {
                let mut writer = lock(writer);
                // Stamped under the stream's lock so timestamps increase along it.
                let first_ts = self.store.clock.reserve(now, count);
                if writer.append(first_ts, &self.tag, payloads.clone(), encoded) {
                    self.store.written.send_modify(|n| *n += 1);
                }
                first_ts
            }
        };
        let publisher = &self.store.publisher;
        if publisher.has_followers() {
            publisher.publish(&self.service, self.stream, &self.origin, first_ts, payloads);
        }
    }

    /// Whether buffered lines wait for a write. Never blocks: a writer busy
    /// elsewhere counts as pending (the idle flush then finds nothing or
    /// writes what is there).
    fn has_pending(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| match w.try_lock() {
            Ok(writer) => writer.has_pending(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().has_pending(),
            Err(TryLockError::WouldBlock) => true,
        })
    }

    /// Writes this stream's buffered lines. Blocking.
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

/// The runtime every pump of the daemon shares: one thread of its own, so
/// log work and requests never wait for each other's turn. `None` if the
/// thread could not be started (the pumps then run where they are spawned).
fn log_runtime() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| crate::runtime_thread::start("kepler-logs"))
        .as_ref()
}

/// A pipe a pump let go of for an upgrade's hand-over: the read end, and
/// the partial line it had read (no `\n` in it). Every complete line read
/// before is stored; what is still in the pipe is the next daemon's.
#[derive(Debug)]
pub struct HandedPipe {
    pub fd: OwnedFd,
    pub carry: Vec<u8>,
}

/// Where a service's pump leaves its pipe when the daemon hands over.
pub type HandoverSlot = Arc<Mutex<Option<HandedPipe>>>;

/// Raised once for the whole process when the daemon hands over to a new
/// binary: every pump with a slot stops at its next turn boundary.
fn handing_over() -> &'static watch::Sender<bool> {
    static FLAG: OnceLock<watch::Sender<bool>> = OnceLock::new();
    FLAG.get_or_init(|| watch::channel(false).0)
}

/// Tells every service pump to stop reading and leave its pipe in its slot.
pub fn begin_handover() {
    handing_over().send_replace(true);
}

/// Lets pumps run on again (a hand-over that was given up; pumps already
/// ended are started again by their owners).
pub fn cancel_handover() {
    handing_over().send_replace(false);
}

/// The read end a pump drains: a descriptor, or a pipe held by io_uring
/// outside the descriptor table ([`held`]).
pub enum PipeEnd {
    Fd(pipe::Receiver),
    Held(HeldPipe),
}

impl From<pipe::Receiver> for PipeEnd {
    fn from(pipe: pipe::Receiver) -> Self {
        PipeEnd::Fd(pipe)
    }
}

impl PipeEnd {
    async fn readable(&self) -> io::Result<()> {
        match self {
            PipeEnd::Fd(pipe) => pipe.readable().await,
            PipeEnd::Held(pipe) => pipe.readable().await,
        }
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            PipeEnd::Fd(pipe) => pipe.try_read_buf(buf),
            PipeEnd::Held(pipe) => pipe.try_read_buf(buf),
        }
    }

    /// Gives a chatty service's pipe more room (best effort: failure
    /// leaves the default 64 KiB, which still works).
    fn grow(&self) {
        match self {
            // SAFETY: fcntl on a file descriptor we own, no pointers passed.
            PipeEnd::Fd(pipe) => unsafe {
                libc::fcntl(
                    pipe.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    CHATTY_PIPE as libc::c_int,
                );
            },
            PipeEnd::Held(pipe) => pipe.set_capacity(CHATTY_PIPE),
        }
    }

    /// The read end as a descriptor, for a hand-over: an exec keeps
    /// descriptors but not io_uring instances.
    fn into_fd(self) -> io::Result<OwnedFd> {
        match self {
            PipeEnd::Fd(pipe) => pipe.into_nonblocking_fd(),
            PipeEnd::Held(pipe) => pipe.into_fd(),
        }
    }
}

/// Pumps `pipe` on the log thread; see [`pump`]. The read end leaves the
/// daemon's descriptor table for an io_uring where it can ([`held`]).
pub fn spawn_pump(pipe: pipe::Receiver, sink: LogSink) -> PumpHandle {
    spawn_pump_with(pipe, sink, Vec::new(), None)
}

/// Pumps a service's pipe on the log thread, starting after `carry` (a
/// partial line handed over by the previous daemon), and leaving the pipe in
/// `slot` if the daemon hands over.
pub fn spawn_pump_with(
    pipe: pipe::Receiver,
    sink: LogSink,
    carry: Vec<u8>,
    slot: Option<HandoverSlot>,
) -> PumpHandle {
    let (done, handle) = oneshot::channel();
    let Some((runtime, queue)) = log_thread() else {
        tokio::spawn(async move {
            let _ = done.send(pump_from(pipe.into(), sink, carry, slot).await);
        });
        return PumpHandle(handle);
    };
    // The pipe moves to the log thread's reactor (or its rings), so its
    // wake-ups are handled there too.
    let fd = match pipe.into_nonblocking_fd() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(service = %sink.service, "cannot hand the output pipe to the log thread: {e}");
            let _ = done.send(PumpReport::default());
            return PumpHandle(handle);
        }
    };
    // Held here, on the spawning thread, so a burst of spawns never piles
    // up descriptors waiting for the log thread.
    let held = held::hold(fd, runtime);
    let job = Box::pin(async move {
        // Registered with the log thread's reactor, so made there.
        let pipe = match held {
            Ok(held) => Ok(PipeEnd::Held(held)),
            // No ring took it: a descriptor while the service runs.
            Err(fd) => pipe::Receiver::from_owned_fd_unchecked(keep_high(fd)).map(PipeEnd::from),
        };
        let report = match pipe {
            Ok(pipe) => pump_from(pipe, sink, carry, slot).await,
            Err(e) => {
                tracing::warn!(service = %sink.service, "cannot watch the output pipe: {e}");
                PumpReport::default()
            }
        };
        let _ = done.send(report);
    });
    if let Err(refused) = queue.send(job) {
        // The log thread is gone (only while the process exits).
        tokio::spawn(refused.0);
    }
    PumpHandle(handle)
}

/// A pump on the log thread; resolves to what it stored once its pipe has
/// ended (an empty report if the pump was never run).
#[derive(Debug)]
pub struct PumpHandle(oneshot::Receiver<PumpReport>);

impl Future for PumpHandle {
    type Output = PumpReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PumpReport> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|report| report.unwrap_or_default())
    }
}

type PumpJob = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The log thread's runtime, and the queue its pumps arrive by.
///
/// Spawning onto another thread's runtime wakes that thread every time (an
/// eventfd write, and a wake-up when it sleeps): two per service started.
/// Through the queue, pumps that arrive while the thread has not run yet
/// share one wake-up (a service's two pumps always do), and one task there
/// spawns them locally, which wakes nothing.
fn log_thread() -> Option<(&'static Handle, &'static mpsc::UnboundedSender<PumpJob>)> {
    static QUEUE: OnceLock<Option<mpsc::UnboundedSender<PumpJob>>> = OnceLock::new();
    let runtime = log_runtime()?;
    let queue = QUEUE
        .get_or_init(|| {
            let (queue, mut jobs) = mpsc::unbounded_channel::<PumpJob>();
            runtime.spawn(async move {
                while let Some(job) = jobs.recv().await {
                    tokio::spawn(job);
                }
            });
            Some(queue)
        })
        .as_ref()?;
    Some((runtime, queue))
}

/// What one turn of a pump found.
enum Turn {
    Read(usize),
    NotReady,
    End,
}

/// Reads `pipe` until EOF (or a read error, which is logged), storing and
/// publishing every line. Never fails: disk errors are logged by the writer
/// and the pipe keeps draining so the service never blocks on its output.
pub async fn pump(pipe: impl Into<PipeEnd>, sink: LogSink) -> PumpReport {
    pump_from(pipe.into(), sink, Vec::new(), None).await
}

/// [`pump`], starting with a partial line, and giving the pipe up into
/// `slot` when the daemon hands over.
async fn pump_from(
    pipe: PipeEnd,
    sink: LogSink,
    // A partial line waiting for the rest of it (no `\n` in it).
    mut carry: Vec<u8>,
    slot: Option<HandoverSlot>,
) -> PumpReport {
    let mut report = PumpReport::default();
    let mut grown = false;
    let mut handover = slot.as_ref().map(|_| handing_over().subscribe());
    loop {
        let handed = async {
            match &mut handover {
                Some(flag) => crate::daemon::raised(flag).await,
                None => std::future::pending().await,
            }
        };
        let readable = async {
            if sink.has_pending() {
                // None: idle long enough to write what is buffered.
                tokio::time::timeout(IDLE_FLUSH, pipe.readable()).await.ok()
            } else {
                Some(pipe.readable().await)
            }
        };
        let ready = tokio::select! {
            biased;
            () = handed => {
                // Between turns: every complete line read is stored.
                sink.flush();
                match (&slot, pipe.into_fd()) {
                    (Some(slot), Ok(fd)) => *lock(slot) = Some(HandedPipe { fd, carry }),
                    (_, Err(e)) => tracing::error!(service = %sink.service, "cannot take the output pipe back for the hand-over: {e}"),
                    (None, Ok(_)) => {}
                }
                return report;
            }
            ready = readable => ready,
        };
        let Some(ready) = ready else {
            sink.flush();
            continue;
        };
        if let Err(e) = ready {
            tracing::warn!(service = %sink.service, stream = sink.stream.as_str(), "waiting on an output pipe failed: {e}; storing what was read");
            break;
        }
        let turn = SCRATCH.with(|scratch| {
            one_turn(
                &pipe,
                &sink,
                &mut carry,
                &mut scratch.borrow_mut(),
                &mut report,
            )
        });
        match turn {
            Turn::Read(n) => {
                if n >= DEFAULT_PIPE && !grown {
                    grown = true;
                    pipe.grow();
                }
                // One read's worth per turn: the other pipes go next.
                tokio::task::yield_now().await;
            }
            Turn::NotReady => {}
            Turn::End => break,
        }
    }
    if !carry.is_empty() {
        let mut ranges = Vec::new();
        push_pieces(&mut ranges, 0, carry.len(), sink.max_payload);
        report.lines += ranges.len() as u64;
        report.bytes += carry.len() as u64;
        sink.store_and_publish(&carry, &ranges, &mut Vec::new());
    }
    sink.flush();
    report
}

/// Reads once (without waiting) and stores the complete lines read.
fn one_turn(
    pipe: &PipeEnd,
    sink: &LogSink,
    carry: &mut Vec<u8>,
    scratch: &mut Scratch,
    report: &mut PumpReport,
) -> Turn {
    let Scratch {
        read: data,
        ranges,
        encoded,
    } = scratch;
    data.clear();
    data.extend_from_slice(carry);
    let scanned = carry.len();
    data.reserve(READ_CHUNK);
    let n = match pipe.try_read_buf(data) {
        Ok(0) => return Turn::End,
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Turn::NotReady,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Turn::NotReady,
        Err(e) => {
            tracing::warn!(service = %sink.service, stream = sink.stream.as_str(), "reading an output pipe failed: {e}; storing what was read");
            return Turn::End;
        }
    };
    let consumed = split_lines(data, scanned, false, sink.max_payload, ranges);
    carry.clear();
    carry.extend_from_slice(&data[consumed..]);
    if carry.is_empty() && carry.capacity() > KEEP_CARRY {
        *carry = Vec::new();
    }
    if !ranges.is_empty() {
        report.lines += ranges.len() as u64;
        report.bytes += ranges.iter().map(|(s, e)| (e - s) as u64).sum::<u64>();
        sink.store_and_publish(data, ranges, encoded);
    }
    Turn::Read(n)
}

/// Cuts `data` into line payload ranges (into `ranges`, cleared first).
/// `data[..scanned]` is known to hold no `\n`. Lines longer than `max` become
/// several ranges; so does a trailing partial line once it exceeds `max`. At
/// `eof` the partial line is a range too. Returns how many bytes of `data`
/// the ranges consumed.
pub(crate) fn split_lines(
    data: &[u8],
    scanned: usize,
    eof: bool,
    max: usize,
    ranges: &mut Vec<(usize, usize)>,
) -> usize {
    ranges.clear();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', &data[scanned..]) {
        let end = scanned + nl;
        push_pieces(ranges, start, end, max);
        start = end + 1;
    }
    let rest = data.len() - start;
    if eof && rest > 0 {
        push_pieces(ranges, start, data.len(), max);
        start = data.len();
    } else if rest > max {
        // Keep the tail under the limit for later; it may end the line.
        let whole = rest / max * max;
        let cut = if whole == rest { whole - max } else { whole };
        push_pieces(ranges, start, start + cut, max);
        start += cut;
    }
    start
}

fn push_pieces(ranges: &mut Vec<(usize, usize)>, start: usize, end: usize, max: usize) {
    if start == end {
        ranges.push((start, end));
        return;
    }
    let mut s = start;
    while s < end {
        let e = (s + max).min(end);
        ranges.push((s, e));
        s = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces_max(data: &[u8], eof: bool, max: usize) -> (Vec<usize>, usize) {
        let mut ranges = Vec::new();
        let consumed = split_lines(data, 0, eof, max, &mut ranges);
        (ranges.iter().map(|(s, e)| e - s).collect(), consumed)
    }

    fn pieces(data: &[u8], eof: bool) -> (Vec<usize>, usize) {
        pieces_max(data, eof, MAX_LINE_BYTES)
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
        // A smaller limit (a small max_size) cuts smaller records.
        assert_eq!(pieces_max(b"abcdefg\nhi", true, 3), (vec![3, 3, 1, 2], 10));
    }

    #[test]
    fn scanning_resumes_after_the_known_partial_line() {
        let mut ranges = Vec::new();
        assert_eq!(
            split_lines(b"abc\ndef", 3, false, MAX_LINE_BYTES, &mut ranges),
            4
        );
        assert_eq!(ranges, vec![(0, 3)]);
    }
}
