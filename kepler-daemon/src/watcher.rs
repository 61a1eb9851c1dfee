//! Watching a service's files for `restart.watch`: one [`WatchEvent`] per
//! burst of matching changes, for the orchestrator to restart the service.
//!
//! How it fits: [`watch`] starts a `notify` watcher (inotify on Linux),
//! recursive on the service's `working_dir`, whose raw events go to one
//! debounce thread per watch. That thread filters them (patterns, ignored
//! dirs, access-only events) and sends the survivors, grouped by burst, on
//! the orchestrator's channel. Dropping the [`WatchHandle`] stops both.
//!
//! Semantics chosen:
//! - **Patterns** are globs relative to `root`, where `*`, `?` and `[..]`
//!   never cross a `/` and `**` spans any number of directories: `*.json` is
//!   only the top level, `**/*.json` is any depth, `src/**/*.rs` is under
//!   `src`. A leading `./` is ignored, a trailing `/` means everything below
//!   that directory, and an absolute pattern is matched against the absolute
//!   path.
//! - **Changes** are creations, writes (including close-after-write),
//!   metadata changes other than access time, removals and both ends of a
//!   rename. Opening, reading and closing unwritten files is ignored.
//! - **Ignored**: everything inside `ignore` (e.g. Kepler's state dir, so
//!   writing logs cannot restart a service) and inside `root/.git` (a
//!   checkout rewrites it wholesale; the worktree files it changes are seen
//!   on their own).
//! - **Debounce** is trailing-edge: a burst ends when no matching change has
//!   arrived for `debounce`, and only then is its one event sent. So a burst
//!   of 100 writes gives one restart, and a single write is reported
//!   `debounce` (plus a millisecond or so) after it happened. A burst that
//!   never goes quiet (a file rewritten forever) is still reported every
//!   [`MAX_BURST_FACTOR`] × `debounce` (at least [`MIN_MAX_BURST`]), so it
//!   cannot starve restarts.
//! - A directory created (or moved in) after the watch started is watched by
//!   `notify`; files that appeared in it before its watch was in place are
//!   found by scanning it, so `mkdir -p a/b && touch a/b/x.ts` is never
//!   missed.

use std::collections::HashSet;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::event::{AccessKind, AccessMode, CreateKind, MetadataKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// The debounce window the orchestrator uses unless told otherwise.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// At most this many paths are listed in one event; the rest are counted in
/// [`WatchEvent::omitted`].
pub const MAX_PATHS_PER_EVENT: usize = 32;

/// A burst that never goes quiet is reported after this many debounce
/// windows ...
pub const MAX_BURST_FACTOR: u32 = 20;
/// ... but never sooner than this.
pub const MIN_MAX_BURST: Duration = Duration::from_secs(2);

/// Longer debounce windows are cut to this; it also keeps deadline
/// arithmetic far from overflow.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(3600);

/// Bounds the scan of a newly appeared directory (entries visited).
const NEW_DIR_SCAN_LIMIT: usize = 10_000;

/// What to watch for one service.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub service: String,
    /// The service's working dir; patterns are relative to it.
    pub root: PathBuf,
    /// Globs, already variable-expanded (`restart.watch`).
    pub patterns: Vec<String>,
    /// Directories whose changes never count (relative ones are inside `root`).
    pub ignore: Vec<PathBuf>,
}

/// One burst of matching changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub service: String,
    /// Absolute paths that changed, in the order first seen, at most
    /// [`MAX_PATHS_PER_EVENT`]. Empty only when `missed_events` is set.
    pub paths: Vec<PathBuf>,
    /// How many more distinct paths changed than are listed.
    pub omitted: usize,
    /// The kernel's event queue overflowed: some changes are unknown, so
    /// this burst should be treated as touching anything.
    pub missed_events: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("service {service}: `restart.watch` has no patterns; nothing to watch")]
    NoPatterns { service: String },
    #[error("service {service}: invalid watch pattern `{pattern}`: {source}")]
    InvalidPattern {
        service: String,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error(
        "service {service}: cannot watch `{}`: {source}; check that the service's working_dir \
         exists and is readable",
        path.display()
    )]
    Unreadable {
        service: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "service {service}: cannot watch `{}`: it is not a directory; watch patterns are \
         relative to the service's working_dir",
        path.display()
    )]
    NotADirectory { service: String, path: PathBuf },
    #[error(
        "service {service}: cannot watch `{}`: the inotify watch limit is reached; raise \
         fs.inotify.max_user_watches (sysctl) or watch a smaller working_dir",
        path.display()
    )]
    TooManyWatches { service: String, path: PathBuf },
    #[error("service {service}: cannot watch `{}`: {source}", path.display())]
    Notify {
        service: String,
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("service {service}: cannot start the file watcher thread: {source}")]
    Thread {
        service: String,
        #[source]
        source: io::Error,
    },
}

/// A running watch; dropping it stops watching and closes the event channel
/// once the debounce thread has ended (it is joined, so nothing lingers).
#[derive(Debug)]
pub struct WatchHandle {
    service: String,
    root: PathBuf,
    watcher: Option<RecommendedWatcher>,
    stop: std_mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl WatchHandle {
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The watched directory, canonicalised.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // Stop the source first so nothing new is queued, then the thread.
        // notify's drop unwraps a send to its own event loop thread; should
        // that thread have died, the daemon must still not panic.
        let watcher = self.watcher.take();
        if catch_unwind(AssertUnwindSafe(move || drop(watcher))).is_err() {
            tracing::error!(service = %self.service, "file watcher failed to shut down cleanly");
        }
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(service = %self.service, "file watcher thread panicked");
            }
        }
    }
}

enum Message {
    Fs(notify::Result<Event>),
    Stop,
}

/// Starts watching `spec.root` and sends one [`WatchEvent`] per burst of
/// matching changes on `on_change`. Needs no tokio runtime. `debounce` is
/// capped at [`MAX_DEBOUNCE`].
pub fn watch(
    spec: WatchSpec,
    debounce: Duration,
    on_change: mpsc::UnboundedSender<WatchEvent>,
) -> Result<WatchHandle, WatchError> {
    let debounce = debounce.min(MAX_DEBOUNCE);
    let filter = ChangeFilter::new(&spec)?;
    let root = filter.root.clone();
    let service = spec.service;

    let (sender, receiver) = std_mpsc::channel();
    let from_notify = sender.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        // Fails only once the debounce thread has ended; nothing to do then.
        let _ = from_notify.send(Message::Fs(event));
    })
    .map_err(|source| notify_error(&service, &root, source))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|source| notify_error(&service, &root, source))?;

    let debouncer = Debouncer {
        service: service.clone(),
        filter,
        debounce,
        max_burst: (debounce * MAX_BURST_FACTOR).max(MIN_MAX_BURST),
        on_change,
    };
    let thread = thread::Builder::new()
        .name(format!("kepler-watch-{service}"))
        .spawn(move || debouncer.run(receiver))
        .map_err(|source| WatchError::Thread {
            service: service.clone(),
            source,
        })?;
    Ok(WatchHandle {
        service,
        root,
        watcher: Some(watcher),
        stop: sender,
        thread: Some(thread),
    })
}

fn notify_error(service: &str, root: &Path, source: notify::Error) -> WatchError {
    match source.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::TooManyWatches {
            service: service.to_owned(),
            path: root.to_owned(),
        },
        notify::ErrorKind::Io(_) | notify::ErrorKind::PathNotFound => {
            let io = match source.kind {
                notify::ErrorKind::Io(err) => err,
                _ => io::Error::from(io::ErrorKind::NotFound),
            };
            WatchError::Unreadable {
                service: service.to_owned(),
                path: source
                    .paths
                    .first()
                    .cloned()
                    .unwrap_or_else(|| root.to_owned()),
                source: io,
            }
        }
        _ => WatchError::Notify {
            service: service.to_owned(),
            path: root.to_owned(),
            source,
        },
    }
}

/// Decides which paths of a raw event are changes the service cares about.
struct ChangeFilter {
    /// Canonical, so event paths (built from it by `notify`) share its prefix.
    root: PathBuf,
    relative: GlobSet,
    absolute: GlobSet,
    ignored: Vec<PathBuf>,
}

impl ChangeFilter {
    fn new(spec: &WatchSpec) -> Result<ChangeFilter, WatchError> {
        let service = || spec.service.clone();
        if spec.patterns.is_empty() {
            return Err(WatchError::NoPatterns { service: service() });
        }
        let unreadable = |path: &Path, source| WatchError::Unreadable {
            service: service(),
            path: path.to_owned(),
            source,
        };
        let root = spec
            .root
            .canonicalize()
            .map_err(|err| unreadable(&spec.root, err))?;
        if !root.is_dir() {
            return Err(WatchError::NotADirectory {
                service: service(),
                path: spec.root.clone(),
            });
        }
        // inotify would silently watch nothing below an unlistable root.
        std::fs::read_dir(&root).map_err(|err| unreadable(&spec.root, err))?;

        let mut relative = GlobSetBuilder::new();
        let mut absolute = GlobSetBuilder::new();
        for pattern in &spec.patterns {
            let normalized = normalize_pattern(pattern);
            let glob = GlobBuilder::new(&normalized)
                .literal_separator(true)
                .build()
                .map_err(|source| WatchError::InvalidPattern {
                    service: service(),
                    pattern: pattern.clone(),
                    source,
                })?;
            if Path::new(&normalized).is_absolute() {
                absolute.add(glob);
            } else {
                relative.add(glob);
            }
        }
        let build = |set: GlobSetBuilder| {
            set.build().map_err(|source| WatchError::InvalidPattern {
                service: service(),
                pattern: spec.patterns.join(", "),
                source,
            })
        };

        let mut ignored: Vec<PathBuf> = spec
            .ignore
            .iter()
            .map(|dir| {
                let dir = root.join(dir);
                dir.canonicalize().unwrap_or(dir)
            })
            .collect();
        ignored.push(root.join(".git"));
        Ok(ChangeFilter {
            relative: build(relative)?,
            absolute: build(absolute)?,
            root,
            ignored,
        })
    }

    fn is_ignored(&self, path: &Path) -> bool {
        self.ignored.iter().any(|dir| path.starts_with(dir))
    }

    fn matches(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return false;
        };
        if relative.as_os_str().is_empty() || self.is_ignored(path) {
            return false;
        }
        self.relative.is_match(relative) || self.absolute.is_match(path)
    }

    /// Calls `changed` for every matching path `event` reports as changed
    /// and every directory that may have appeared with files already in it.
    fn changes(&self, event: &Event, changed: &mut impl FnMut(Change)) {
        let may_be_new_dir = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => return,
            EventKind::Create(CreateKind::File) => false,
            EventKind::Create(_) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
            EventKind::Modify(ModifyKind::Name(_)) => true,
            EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => false,
            EventKind::Other => return,
        };
        for path in &event.paths {
            if self.matches(path) {
                changed(Change::Path(path.clone()));
            }
            if may_be_new_dir && !self.is_ignored(path) && is_real_dir(path) {
                changed(Change::NewDir(path.clone()));
            }
        }
    }

    /// Reports the matching files inside directories that appeared after
    /// the watch started: `notify` watches a new directory only from the
    /// moment it sees it, so files made in it before then have no event.
    /// Run when the burst ends, by which time those watches are in place:
    /// a file is either already there for the scan or gets its own event.
    fn scan_new_dirs(&self, dirs: Vec<PathBuf>, changed: &mut impl FnMut(PathBuf)) {
        let mut budget = NEW_DIR_SCAN_LIMIT;
        let mut pending = dirs;
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if budget == 0 {
                    tracing::debug!(dir = %dir.display(), "new directories too large to scan fully");
                    return;
                }
                budget -= 1;
                let path = entry.path();
                if self.is_ignored(&path) {
                    continue;
                }
                // Symlinks are not followed: they could lead outside `root`
                // or in circles.
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    pending.push(path);
                } else if self.matches(&path) {
                    changed(path);
                }
            }
        }
    }
}

/// What [`ChangeFilter::changes`] found in one raw event.
enum Change {
    /// A matching path changed.
    Path(PathBuf),
    /// A directory appeared; what it holds is scanned when the burst ends.
    NewDir(PathBuf),
}

/// `./src/*.rs` is `src/*.rs`; `assets/` means everything below `assets`.
fn normalize_pattern(pattern: &str) -> String {
    let mut pattern = pattern.trim();
    while let Some(rest) = pattern.strip_prefix("./") {
        pattern = rest.trim_start_matches('/');
    }
    if pattern.ends_with('/') {
        format!("{pattern}**")
    } else {
        pattern.to_owned()
    }
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|meta| meta.is_dir())
}

/// The per-watch thread: filters raw events and groups them into bursts.
struct Debouncer {
    service: String,
    filter: ChangeFilter,
    debounce: Duration,
    max_burst: Duration,
    on_change: mpsc::UnboundedSender<WatchEvent>,
}

/// Matching changes seen since the last event was sent.
struct Burst {
    started: Instant,
    last_change: Instant,
    seen: HashSet<PathBuf>,
    paths: Vec<PathBuf>,
    new_dirs: Vec<PathBuf>,
    missed_events: bool,
}

impl Burst {
    fn new(now: Instant) -> Burst {
        Burst {
            started: now,
            last_change: now,
            seen: HashSet::new(),
            paths: Vec::new(),
            new_dirs: Vec::new(),
            missed_events: false,
        }
    }

    fn add(&mut self, path: PathBuf) {
        if self.seen.insert(path.clone()) && self.paths.len() < MAX_PATHS_PER_EVENT {
            self.paths.push(path);
        }
    }
}

impl Debouncer {
    fn run(self, messages: std_mpsc::Receiver<Message>) {
        let mut burst: Option<Burst> = None;
        loop {
            let message = match &burst {
                None => match messages.recv() {
                    Ok(message) => message,
                    Err(_) => return,
                },
                Some(current) => {
                    let due =
                        (current.last_change + self.debounce).min(current.started + self.max_burst);
                    match messages.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(message) => message,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            if let Some(done) = burst.take() {
                                if !self.send(done) {
                                    return;
                                }
                            }
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            match message {
                Message::Stop => return,
                Message::Fs(Ok(event)) => self.record(&event, &mut burst),
                Message::Fs(Err(err)) => {
                    tracing::warn!(service = %self.service, %err, "file watcher error");
                }
            }
        }
    }

    fn record(&self, event: &Event, burst: &mut Option<Burst>) {
        let now = Instant::now();
        let gone = matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From))
        );
        if gone && event.paths.contains(&self.filter.root) {
            tracing::warn!(
                service = %self.service,
                root = %self.filter.root.display(),
                "the watched directory was removed or moved away; its changes are no longer seen"
            );
        }
        if event.need_rescan() {
            tracing::warn!(service = %self.service, "file watcher missed events (queue overflow)");
            let current = burst.get_or_insert_with(|| Burst::new(now));
            current.missed_events = true;
            current.last_change = now;
            return;
        }
        self.filter.changes(event, &mut |change| {
            let current = burst.get_or_insert_with(|| Burst::new(now));
            match change {
                Change::Path(path) => current.add(path),
                Change::NewDir(dir) => current.new_dirs.push(dir),
            }
            current.last_change = now;
        });
    }

    /// Sends the burst's event, if it holds any change. False once the
    /// orchestrator has dropped its receiver.
    fn send(&self, mut burst: Burst) -> bool {
        let new_dirs = std::mem::take(&mut burst.new_dirs);
        self.filter
            .scan_new_dirs(new_dirs, &mut |path| burst.add(path));
        if burst.seen.is_empty() && !burst.missed_events {
            return true;
        }
        let event = WatchEvent {
            service: self.service.clone(),
            omitted: burst.seen.len() - burst.paths.len(),
            paths: burst.paths,
            missed_events: burst.missed_events,
        };
        tracing::debug!(service = %self.service, paths = event.paths.len(), "watched files changed");
        self.on_change.send(event).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_pattern;

    #[test]
    fn patterns_are_normalised_relative_to_the_root() {
        assert_eq!(normalize_pattern("./src/*.rs"), "src/*.rs");
        assert_eq!(normalize_pattern("assets/"), "assets/**");
        assert_eq!(normalize_pattern("**/*.ts"), "**/*.ts");
        assert_eq!(normalize_pattern("/abs/dir/"), "/abs/dir/**");
        assert_eq!(normalize_pattern("src/*/"), "src/*/**");
    }
}
