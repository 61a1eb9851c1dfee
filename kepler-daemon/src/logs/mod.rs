//! Log storage: turns each service's stdout/stderr pipes into durable on-disk
//! logs, pushes new lines to followers, and reads logs back fast.
//!
//! One [`LogStore`] per loaded config owns `<config state dir>/logs/`. Each
//! service has two files there, `<service>.stdout.log` and
//! `<service>.stderr.log`; hook output goes to the files of the service it
//! belongs to (global hooks use the reserved service name [`GLOBAL_SERVICE`]),
//! each line tagged with its [`Origin`]. The record format is in [`record`].
//!
//! The path of a line: a [`pump`](pump::pump) task reads the pipe in large
//! chunks and hands the complete lines of one read to the file's shared
//! [`writer`] (one `write` per batch, on the blocking pool), then publishes
//! them on the config's broadcast ([`follow`]). Readers ([`reader`]) scan
//! files backwards for `--tail`, forwards with a k-way merge for `--head` and
//! whole-log dumps, and [`cursor`] keeps paging positions for clients.
//!
//! Timestamps are unique within a config: a per-config clock hands out
//! strictly increasing microseconds (the wall clock, or one past the last value
//! when lines arrive faster than one per microsecond). So a timestamp names a
//! line, files are sorted by it, merges are exact, and followers and cursors
//! resume by timestamp instead of byte offsets, which a truncation would move.

pub mod cursor;
pub mod follow;
pub mod pump;
pub mod reader;
pub mod record;
pub mod writer;

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

pub use cursor::{CursorRegistry, LogCursorId, LogPage};
pub use follow::{FollowEvent, Follower};
pub use pump::{pump, pump_reader, LogSink, PumpReport};
pub use reader::{clear, clear_all, head, read_after, read_all, tail, tail_start, LogMerge};
pub use record::{GLOBAL_SERVICE, MAX_LINE_BYTES};

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
    /// Size past which a file is cut down to its newest half.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What can go wrong in the log store, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {source}; check free disk space and the permissions of the config's state directory")]
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
/// that stamps lines, the followers' broadcast and the paging cursors.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<StoreInner>,
}

/// A file's writer, shared by the service's pump and its hooks' pumps.
pub(crate) type SharedWriter = Arc<Mutex<FileWriter>>;

pub(crate) struct StoreInner {
    pub(crate) dir: PathBuf,
    pub(crate) clock: LogClock,
    pub(crate) writers: Mutex<HashMap<(String, Stream), SharedWriter>>,
    pub(crate) publisher: Publisher,
    /// Bumped after every write that reached a file, so tests and tools can
    /// wait for "it is on disk" as an event.
    pub(crate) written: watch::Sender<u64>,
    cursors: CursorRegistry,
}

impl LogStore {
    /// Opens (creating if needed, mode 0750 before umask) the log directory
    /// `dir` and starts the clock after the newest line already stored there,
    /// so timestamps stay unique across daemon restarts.
    pub fn open(dir: impl Into<PathBuf>) -> Result<LogStore, LogError> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .map_err(io_error(&dir))?;
        let meta = std::fs::symlink_metadata(&dir).map_err(io_error(&dir))?;
        if !meta.is_dir() {
            return Err(LogError::NotADirectory { path: dir });
        }
        let newest = reader::newest_timestamp(&dir)?;
        Ok(LogStore {
            inner: Arc::new(StoreInner {
                clock: LogClock::starting_after(newest),
                writers: Mutex::new(HashMap::new()),
                publisher: Publisher::new(),
                written: watch::channel(0).0,
                cursors: CursorRegistry::new(dir.clone()),
                dir,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where a pump for `service`'s `stream` writes. Hooks pass their
    /// `Origin::Hook` with the settings of the service they belong to; the
    /// latest settings given for a file apply to it from now on.
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
        let writer = stored.then(|| {
            let mut writers = lock(&self.inner.writers);
            let writer = writers
                .entry((service.to_string(), stream))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(FileWriter::new(
                        record::log_path(&self.inner.dir, service, stream),
                        settings,
                    )))
                });
            lock(writer).configure(settings);
            writer.clone()
        });
        LogSink::new(self.inner.clone(), service, stream, origin, writer)
    }

    /// Subscribes to new lines, then reads the newest `tail` lines already
    /// stored; the follower skips live lines that the tail already holds or
    /// that are older than it, so the two join without gap or duplicate.
    pub async fn follow(
        &self,
        services: &[String],
        tail: usize,
        include_hooks: bool,
    ) -> Result<(Vec<LogLine>, Follower), LogError> {
        let mut follower = self.inner.publisher.subscribe(services, include_hooks);
        let dir = self.inner.dir.clone();
        let wanted = services.to_vec();
        let lines = if tail == 0 {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || reader::tail(&dir, &wanted, tail, include_hooks))
                .await
                .map_err(|e| LogError::Io {
                    path: self.inner.dir.clone(),
                    source: io::Error::other(e),
                })??
        };
        follower.continue_after(&lines, tail);
        Ok((lines, follower))
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

    /// Empties `service`'s log files (retention policies). Running pumps keep
    /// writing: each file is truncated in place under its writer's lock, and
    /// the writer appends to the emptied file. Blocking.
    pub fn clear(&self, service: &str) -> Result<(), LogError> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.clear_file(service, stream)?;
        }
        Ok(())
    }

    /// Empties every log file of the config. Blocking.
    pub fn clear_all(&self) -> Result<(), LogError> {
        for (service, stream) in reader::log_files(&self.inner.dir)? {
            self.clear_file(&service, stream)?;
        }
        Ok(())
    }

    /// One file at a time, so no two writer locks are ever held together.
    fn clear_file(&self, service: &str, stream: Stream) -> Result<(), LogError> {
        let path = record::log_path(&self.inner.dir, service, stream);
        let writer = lock(&self.inner.writers)
            .get(&(service.to_string(), stream))
            .cloned();
        match writer {
            Some(writer) => lock(&writer).clear(),
            None => reader::truncate_file(&path),
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

impl LogLine {
    /// The line as sent to clients; `show_time` when its service asks for
    /// its lines to be shown with their time (`logs.timestamp`).
    pub fn into_wire(self, show_time: bool) -> kepler_protocol::LogLine {
        kepler_protocol::LogLine {
            service: self.service,
            hook: match self.origin {
                Origin::Service => None,
                Origin::Hook(name) => Some(name),
            },
            stderr: self.stream == Stream::Stderr,
            show_time,
            timestamp_us: self.timestamp_us,
            bytes: self.bytes,
        }
    }
}
