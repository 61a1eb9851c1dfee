//! Watching a service's files for `restart.watch`: one [`WatchEvent`] per
//! burst of matching changes, for the orchestrator to restart the service.
//!
//! How it fits: the daemon has one [`WatchHub`], a thread owning the one
//! inotify instance every watch shares ([`hub`]). [`WatchHub::watch`] hands
//! it a service's patterns; it watches the fixed base directory of each
//! pattern as deep as the pattern reaches ([`patterns`]), looking at the
//! files as the service's user ([`identity`]), and sends that service's
//! debounced changes, and notes for its log, on the orchestrator's channel
//! ([`subscription`]). Dropping the [`WatchHandle`] releases its watches.
//!
//! Semantics chosen:
//! - **Patterns** are globs relative to the service's working dir, where
//!   `*`, `?` and `[..]` never cross a `/` and `**` spans any number of
//!   directories: `*.json` is only the top level, `**/*.json` is any depth,
//!   `src/**/*.rs` is under `src`. A leading `./` is ignored, a trailing `/`
//!   means everything below that directory, and an absolute pattern is
//!   watched from its own base directory, wherever that is.
//! - **Missing directories**: a base directory that does not exist (or
//!   that the service's user cannot reach, which looks the same to it) is
//!   noted once in the service's log, and the nearest directory above it
//!   is watched until it appears; from then on it is watched like the rest.
//! - **Changes** are creations, writes, metadata changes, removals and
//!   both ends of a rename. Opening and reading files never count.
//! - **Ignored**: everything inside `ignore` (Kepler's own files, so
//!   writing logs cannot restart a service) and inside `root/.git` (a
//!   checkout rewrites it wholesale; the worktree files it changes are seen
//!   on their own). Ignored directories are not watched at all.
//! - **Debounce** is trailing-edge: a burst ends when no matching change has
//!   arrived for `debounce`, and only then is its one event sent. So a burst
//!   of 100 writes gives one restart, and a single write is reported
//!   `debounce` (plus a millisecond or so) after it happened. A burst that
//!   never goes quiet (a file rewritten forever) is still reported every
//!   [`MAX_BURST_FACTOR`] × `debounce` (at least [`MIN_MAX_BURST`]), so it
//!   cannot starve restarts.
//! - A directory created (or moved in) after the watch started is watched as
//!   soon as its creation is seen, and the matching files already in it are
//!   reported, so `mkdir -p a/b && touch a/b/x.ts` is never missed.
//! - **Budget**: each user (root included) may hold at most a share of the
//!   kernel's `fs.inotify.max_user_watches` ([`default_budget`]); past it,
//!   the rest of the tree is left unwatched with a note in the service's
//!   log, and the service runs on.

mod hub;
mod identity;
mod patterns;
mod subscription;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::eventfd::EventFd;
use tokio::sync::mpsc;

pub use identity::FsIdentity;

use hub::Command;
use patterns::ChangeFilter;
use subscription::Subscription;

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

/// The share of the kernel's watch limit one user may hold: an eighth, so
/// several users (and root) each keep room however many watches one uses.
pub const BUDGET_SHARE: usize = 8;

/// What to watch for one service.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub service: String,
    /// The service's working dir (absolute); relative patterns are in it.
    pub root: PathBuf,
    /// Globs, already variable-expanded (`restart.watch`).
    pub patterns: Vec<String>,
    /// Directories and files whose changes never count (relative ones are
    /// inside `root`).
    pub ignore: Vec<PathBuf>,
    /// Who to look at the files as; `None` for the daemon's own identity
    /// (a service that runs as root).
    pub identity: Option<FsIdentity>,
}

/// One burst of matching changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub service: String,
    /// The watch it comes from ([`WatchHandle::id`]), so an event of an
    /// earlier watch of the same service can be told apart.
    pub watch: u64,
    /// Absolute paths that changed, in the order first seen, at most
    /// [`MAX_PATHS_PER_EVENT`]. Empty only when `missed_events` is set.
    pub paths: Vec<PathBuf>,
    /// How many more distinct paths changed than are listed.
    pub omitted: usize,
    /// The kernel's event queue overflowed: some changes are unknown, so
    /// this burst should be treated as touching anything.
    pub missed_events: bool,
}

/// What a watch tells its orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchReport {
    Changed(WatchEvent),
    /// Something about the watch itself, for the service's log (a missing
    /// directory, the budget reached).
    Note {
        service: String,
        watch: u64,
        text: String,
    },
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
        "service {service}: cannot watch relative to `{}`: the working dir must be absolute",
        path.display()
    )]
    RelativeRoot { service: String, path: PathBuf },
    #[error("the file watcher is not running: {0}; file changes are not seen")]
    Unavailable(String),
}

/// The daemon's file watcher: one thread and one inotify instance for every
/// watch. Cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    link: Arc<Link>,
}

struct Link {
    commands: std_mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    next_id: AtomicU64,
    budget: usize,
}

/// A share of the kernel's `fs.inotify.max_user_watches`: [`BUDGET_SHARE`]
/// of it, at least 256.
pub fn default_budget() -> usize {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(8192);
    (limit / BUDGET_SHARE).max(256)
}

impl WatchHub {
    /// Starts a watcher thread whose users may each hold `budget` watches.
    pub fn start(budget: usize) -> io::Result<WatchHub> {
        let (commands, wake) = hub::start(budget)?;
        Ok(WatchHub {
            link: Arc::new(Link {
                commands,
                wake,
                next_id: AtomicU64::new(1),
                budget,
            }),
        })
    }

    /// The daemon's watcher, started on first use with [`default_budget`].
    pub fn shared() -> Result<WatchHub, WatchError> {
        static SHARED: OnceLock<Result<WatchHub, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| WatchHub::start(default_budget()).map_err(|e| e.to_string()))
            .clone()
            .map_err(WatchError::Unavailable)
    }

    /// Watches per user.
    pub fn budget(&self) -> usize {
        self.link.budget
    }

    fn send(&self, command: Command) -> Result<(), WatchError> {
        self.link
            .commands
            .send(command)
            .map_err(|_| WatchError::Unavailable("its thread has ended".into()))?;
        self.link
            .wake
            .write(1)
            .map_err(|e| WatchError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Starts watching `spec` and sends one [`WatchEvent`] per burst of
    /// matching changes (and notes) on `reports`. Returns once the initial
    /// watches are in place, so a change made after it returns is seen.
    /// `debounce` is capped at [`MAX_DEBOUNCE`].
    pub fn watch(
        &self,
        spec: WatchSpec,
        debounce: Duration,
        reports: mpsc::UnboundedSender<WatchReport>,
    ) -> Result<WatchHandle, WatchError> {
        let debounce = debounce.min(MAX_DEBOUNCE);
        let filter = ChangeFilter::new(&spec)?;
        let id = self.link.next_id.fetch_add(1, Ordering::Relaxed);
        let subscription = Subscription::new(
            id,
            spec.service.clone(),
            spec.identity,
            filter,
            debounce,
            (debounce * MAX_BURST_FACTOR).max(MIN_MAX_BURST),
            reports,
        );
        let (ready, set_up) = std_mpsc::sync_channel(1);
        self.send(Command::Add {
            subscription: Box::new(subscription),
            ready,
        })?;
        set_up
            .recv()
            .map_err(|_| WatchError::Unavailable("its thread has ended".into()))?;
        Ok(WatchHandle {
            id,
            service: spec.service,
            hub: self.clone(),
        })
    }
}

/// A running watch; dropping it releases its watches and closes its side
/// of the report channel (it waits for the watcher thread to do so).
pub struct WatchHandle {
    id: u64,
    service: String,
    hub: WatchHub,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle")
            .field("id", &self.id)
            .field("service", &self.service)
            .finish()
    }
}

impl WatchHandle {
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Names this watch in its [`WatchEvent`]s and notes.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let (done, released) = std_mpsc::sync_channel(1);
        if self.hub.send(Command::Remove { id: self.id, done }).is_ok() {
            let _ = released.recv();
        }
    }
}
