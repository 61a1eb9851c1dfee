//! Log storage: turns each service's stdout/stderr pipes into durable on-disk
//! logs, pushes new lines to followers, and reads logs back fast.
//!
//! One [`LogStore`] per loaded config owns `<config state dir>/logs/`, opened
//! once as a directory fd ([`dir`]). Each service has two streams there,
//! stdout and stderr, each one or two segment files ([`record`] has the
//! names and the record format); hook output goes to the streams of the
//! service it belongs to (global hooks use the reserved service name
//! [`GLOBAL_SERVICE`]), each line tagged with its [`Origin`].
//!
//! The path of a line: a [`pump`](pump::pump) on the log thread reads the
//! pipe and hands the complete lines of one read to the stream's shared
//! [`writer`] (one `write` per read; `max_size` is kept by rotating
//! segments), then publishes them to followers ([`follow`]). Readers walk
//! streams backwards for `--tail` ([`backward`]) and forwards with a k-way
//! merge for `--head`, whole logs and cursor pages ([`forward`], [`cursor`]),
//! and hand a follow its stored lines page by page ([`backlog`]); every
//! reader sees a stream's two segments as one ([`segments`]).
//!
//! Timestamps are unique within a config: a per-config clock hands out
//! strictly increasing microseconds (the wall clock, or one past the last value
//! when lines arrive faster than one per microsecond). So a timestamp names a
//! line, streams are sorted by it, merges are exact, and followers and cursors
//! resume by timestamp instead of byte offsets, which a rotation would move.

pub mod backlog;
pub mod backward;
pub mod cursor;
pub mod dir;
pub mod filter;
pub mod follow;
pub mod forward;
pub mod held;
pub mod pump;
pub mod record;
pub(crate) mod search;
pub mod segments;
pub mod writer;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::watch;

pub use backlog::Backlog;
pub use backward::{tail, tail_matching, tail_start, tail_start_matching};
pub use cursor::{CursorRegistry, LogCursorId, LogPage};
pub use dir::LogDir;
pub use filter::{FilterError, LineFilter};
pub use follow::{FollowEvent, Follower};
pub use forward::{head, read_after, read_all, read_matching, LogMerge, PageLimit};
pub use pump::{
    begin_handover, cancel_handover, pump, spawn_pump, spawn_pump_with, HandedPipe, HandoverSlot,
    LogSink, PumpHandle, PumpReport,
};
pub use record::{Segment, GLOBAL_SERVICE, MAX_LINE_BYTES};
pub use segments::log_files;
pub use writer::{MAX_BUFFER_SIZE, MIN_MAX_SIZE};

use follow::Publisher;
use writer::{FileWriter, LogClock};

/// How one service's output is stored; the orchestrator maps the config's
/// `logs:` section onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub store_stdout: bool,
    pub store_stderr: bool,
    /// Bytes to gather before a write; 0 writes every pipe read before the next.
    pub buffer_size: usize,
    /// Disk a stream may use: two segments of at most half of it each.
    pub max_size: Option<u64>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            store_stdout: true,
            store_stderr: true,
            buffer_size: 0,
            max_size: None,
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Who wrote a line: the service's own process or one of its hooks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    Service,
    /// A hook, by name (e.g. `pre_start`).
    Hook(String),
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub service: String,
    pub stream: Stream,
    pub origin: Origin,
    /// Unix microseconds; unique within a config.
    pub timestamp_us: u64,
    /// The raw bytes of the line, without the newline.
    pub bytes: Vec<u8>,
}

/// What to do about a failed log file operation.
fn io_hint(error: &io::Error) -> &'static str {
    match os_error(error) {
        Some(libc::EMFILE) => {
            "the daemon has all the files open its limit allows (a request over many \
             services' logs opens each one); raise the daemon's open-file limit \
             (LimitNOFILE= in its systemd unit, or `ulimit -Hn` where it is started)"
        }
        Some(libc::ENFILE) => {
            "the system has all the files open it allows; raise fs.file-max or close files"
        }
        _ => "check free disk space and the permissions of the config's state directory",
    }
}

/// The OS error behind `error`, also where it was wrapped with its path on
/// the way (the state tree's errors are).
fn os_error(error: &io::Error) -> Option<i32> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = next {
        if let Some(code) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = error.source();
    }
    None
}

/// What can go wrong in the log store, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}; {}", io_hint(.source))]
    Io { path: PathBuf, source: io::Error },
    #[error("log directory {path} is not a directory (a symlink or a file is in the way); remove it so kepler can recreate it")]
    NotADirectory { path: PathBuf },
    #[error("log cursor {0} is unknown: it was closed, expired after {1:?} without use, or was replaced by newer cursors; open a new one")]
    UnknownCursor(u64, Duration),
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Locks a mutex, ignoring poisoning: log state stays usable even if a thread
/// panicked while holding it (the data is plain bytes and counters).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The log store of one config: its directory, the open writers, the clock
/// that stamps lines, the followers' ring and the paging cursors.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<StoreInner>,
}

/// A stream's writer, shared by the service's pump and its hooks' pumps.
pub(crate) type SharedWriter = Arc<Mutex<FileWriter>>;

pub(crate) struct StoreInner {
    pub(crate) dir: Arc<LogDir>,
    pub(crate) clock: LogClock,
    /// An `IndexMap`, which keeps each key's hash: growing it to 20,000
    /// streams does not hash every name again.
    pub(crate) writers: Mutex<IndexMap<(String, Stream), SharedWriter>>,
    /// Streams that had files when the store opened and have no writer
    /// yet: a writer learns from this whether its stream holds lines.
    found_on_disk: Mutex<HashSet<(String, Stream)>>,
    pub(crate) publisher: Arc<Publisher>,
    /// Bumped after every write that reached a file, so tests and tools can
    /// wait for "it is on disk" as an event.
    pub(crate) written: watch::Sender<u64>,
    cursors: CursorRegistry,
}

impl LogStore {
    /// Opens (creating if needed) the log directory `dir` by path, for tests
    /// and tools; see [`LogStore::in_dir`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<LogStore, LogError> {
        Self::in_dir(LogDir::open(dir)?)
    }

    /// The store of the log directory `dir`, with its clock started after
    /// the newest line already stored there, so timestamps stay unique
    /// across daemon restarts.
    pub fn in_dir(dir: LogDir) -> Result<LogStore, LogError> {
        let dir = Arc::new(dir);
        let newest = backward::newest_timestamp(&dir)?;
        let found_on_disk = log_files(&dir)?.into_iter().collect();
        Ok(LogStore {
            inner: Arc::new(StoreInner {
                clock: LogClock::starting_after(newest),
                writers: Mutex::new(IndexMap::new()),
                found_on_disk: Mutex::new(found_on_disk),
                publisher: Publisher::new(),
                written: watch::channel(0).0,
                cursors: CursorRegistry::new(dir.clone()),
                dir,
            }),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &LogDir {
        &self.inner.dir
    }

    /// Its path (for messages and tools; files are reached through the fd).
    pub fn path(&self) -> &Path {
        self.inner.dir.path()
    }

    /// Where a pump for `service`'s `stream` writes. Hooks pass their
    /// `Origin::Hook` with the settings of the service they belong to; the
    /// latest settings given for a stream apply to it from now on.
    pub fn sink(
        &self,
        service: &str,
        stream: Stream,
        origin: Origin,
        settings: &LogSettings,
    ) -> LogSink {
        let stored = match stream {
            Stream::Stdout => settings.store_stdout,
            Stream::Stderr => settings.store_stderr,
        };
        let writer = stored
            .then(|| self.writer(service, stream, settings))
            .flatten();
        LogSink::new(self.inner.clone(), service, stream, origin, writer)
    }

    fn writer(
        &self,
        service: &str,
        stream: Stream,
        settings: &LogSettings,
    ) -> Option<SharedWriter> {
        let mut writers = lock(&self.inner.writers);
        if let Some(writer) = writers.get(&(service.to_string(), stream)) {
            lock(writer).configure(settings);
            return Some(writer.clone());
        }
        let names = record::file_name(service, stream, Segment::Current).zip(record::file_name(
            service,
            stream,
            Segment::Previous,
        ));
        let Some((current, previous)) = names else {
            // Names are validated at bake; a name that is not one file name
            // is never stored, wherever it came from.
            tracing::warn!(
                service,
                "not storing the output of a service whose name is not a file name"
            );
            return None;
        };
        let key = (service.to_string(), stream);
        let on_disk = lock(&self.inner.found_on_disk).remove(&key);
        let writer = Arc::new(Mutex::new(FileWriter::new(
            self.inner.dir.clone(),
            current,
            previous,
            settings,
            on_disk,
        )));
        writers.insert(key, writer.clone());
        Some(writer)
    }

    /// Bytes written to each stream's files since the daemon started, by
    /// service (hooks count with their service).
    pub fn bytes_written(&self) -> Vec<(String, Stream, u64)> {
        let writers: Vec<((String, Stream), SharedWriter)> = lock(&self.inner.writers)
            .iter()
            .map(|(key, writer)| (key.clone(), writer.clone()))
            .collect();
        writers
            .into_iter()
            .map(|((service, stream), writer)| (service, stream, lock(&writer).written_total()))
            .collect()
    }

    /// Subscribes to new lines, then notes the newest `tail` lines already
    /// stored, to be read page by page from the [`Backlog`]; the follower
    /// skips live lines the backlog covers, so the two join without gap or
    /// duplicate.
    pub async fn follow(
        &self,
        services: &[String],
        tail: usize,
        include_hooks: bool,
    ) -> Result<(Backlog, Follower), LogError> {
        self.follow_matching(services, tail, include_hooks, &LineFilter::everything())
            .await
    }

    /// [`follow`](Self::follow) with a backlog of the lines `filter` keeps
    /// (live lines are the caller's to filter).
    pub async fn follow_matching(
        &self,
        services: &[String],
        tail: usize,
        include_hooks: bool,
        filter: &LineFilter,
    ) -> Result<(Backlog, Follower), LogError> {
        let mut follower = self.inner.publisher.subscribe(services, include_hooks);
        let dir = self.inner.dir.clone();
        let wanted = services.to_vec();
        let filter = filter.clone();
        let backlog = tokio::task::spawn_blocking(move || {
            Backlog::open(dir, &wanted, tail, include_hooks, &filter)
        })
        .await
        .map_err(|e| LogError::Io {
            path: self.path().to_path_buf(),
            source: io::Error::other(e),
        })??;
        let (ends, window_start) = backlog.coverage();
        follower.continue_after(ends, window_start);
        Ok((backlog, follower))
    }

    /// Subscribes to new lines only.
    pub fn subscribe(&self, services: &[String], include_hooks: bool) -> Follower {
        self.inner.publisher.subscribe(services, include_hooks)
    }

    /// Writes out every buffered line (the daemon calls this at shutdown).
    /// Blocking: call from `spawn_blocking` in async code.
    pub fn flush(&self) {
        let writers: Vec<_> = lock(&self.inner.writers).values().cloned().collect();
        for writer in writers {
            if lock(&writer).flush() {
                self.inner.written.send_modify(|n| *n += 1);
            }
        }
    }

    /// Empties `service`'s streams (retention policies). Running pumps keep
    /// writing: each stream is cleared under its writer's lock, and the
    /// writer appends to the emptied segment. Blocking.
    pub fn clear(&self, service: &str) -> Result<(), LogError> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.clear_stream(service, stream)?;
        }
        Ok(())
    }

    /// Empties every stream of the config. Blocking.
    pub fn clear_all(&self) -> Result<(), LogError> {
        for (service, stream) in log_files(&self.inner.dir)? {
            self.clear_stream(&service, stream)?;
        }
        Ok(())
    }

    /// One stream at a time, so no two writer locks are ever held together.
    fn clear_stream(&self, service: &str, stream: Stream) -> Result<(), LogError> {
        let writer = lock(&self.inner.writers)
            .get(&(service.to_string(), stream))
            .cloned();
        match writer {
            Some(writer) => lock(&writer).clear(),
            None => clear_stream(&self.inner.dir, service, stream),
        }
    }

    /// A receiver whose value changes after each write that reached a file.
    pub fn writes(&self) -> watch::Receiver<u64> {
        self.inner.written.subscribe()
    }

    /// The paging cursors of this config.
    pub fn cursors(&self) -> &CursorRegistry {
        &self.inner.cursors
    }
}

/// Empties one stream without its writer at hand: the previous segment is
/// removed and the current one emptied in place, which an open writer
/// survives (it appends). Prefer [`LogStore::clear`] while the config runs,
/// which also drops lines still buffered.
fn clear_stream(dir: &LogDir, service: &str, stream: Stream) -> Result<(), LogError> {
    let names = record::file_name(service, stream, Segment::Current).zip(record::file_name(
        service,
        stream,
        Segment::Previous,
    ));
    let Some((current, previous)) = names else {
        return Ok(());
    };
    dir.remove(&previous)
        .map_err(io_error(&dir.display_path(&previous)))?;
    writer::truncate(dir, &current)
}

/// Empties `service`'s stdout and stderr streams in `dir`; see
/// [`LogStore::clear`] for the version that knows the writers.
pub fn clear(dir: &LogDir, service: &str) -> Result<(), LogError> {
    for stream in [Stream::Stdout, Stream::Stderr] {
        clear_stream(dir, service, stream)?;
    }
    Ok(())
}

/// Empties every stream in `dir`.
pub fn clear_all(dir: &LogDir) -> Result<(), LogError> {
    for (service, stream) in log_files(dir)? {
        clear_stream(dir, &service, stream)?;
    }
    Ok(())
}

impl LogLine {
    /// The line as sent to clients; `show_time` when its service asks for
    /// its lines to be shown with their time (`logs.timestamp`), `replica`
    /// when it is an instance of a replicated service.
    pub fn into_wire(self, show_time: bool, replica: Option<u32>) -> kepler_protocol::LogLine {
        kepler_protocol::LogLine {
            service: self.service,
            hook: match self.origin {
                Origin::Service => None,
                Origin::Hook(name) => Some(name),
            },
            stderr: self.stream == Stream::Stderr,
            show_time,
            replica,
            timestamp_us: self.timestamp_us,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_says_what_to_do_about_it() {
        let error = |errno| LogError::Io {
            path: PathBuf::from("/state/logs/web.stdout.log"),
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(error(libc::EMFILE)
            .to_string()
            .contains("raise the daemon's open-file limit"));
        assert!(error(libc::ENOSPC)
            .to_string()
            .contains("check free disk space"));
        // As the log directory reports it: through the state tree's checks,
        // which name the file.
        let through_tree = LogError::Io {
            path: PathBuf::from("/state/logs/web.stdout.log"),
            source: crate::trusted_fs::TrustError::Io {
                path: PathBuf::from("/state/logs/web.stdout.log"),
                source: io::Error::from_raw_os_error(libc::EMFILE),
            }
            .into(),
        };
        assert!(through_tree
            .to_string()
            .contains("raise the daemon's open-file limit"));
    }
}
