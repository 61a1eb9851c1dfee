//! One service's watch, as the hub thread keeps it: the directories it
//! watches (and how deep below each), the roots still waiting for their
//! directory to appear, the burst of changes being debounced, and the notes
//! already written to the service's log.
//!
//! Everything that touches the file system (walking a tree, checking that
//! a directory exists, adding a watch) runs with the service user's
//! file-access identity, so a service learns only what its user could.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InotifyEvent, WatchDescriptor};
use tokio::sync::mpsc;

use super::hub::{AddFailure, Watches};
use super::identity::FsIdentity;
use super::patterns::{ChangeFilter, Depth};
use super::{WatchEvent, WatchReport, MAX_PATHS_PER_EVENT};

/// Entries reported from directories that appeared with files already in
/// them (a `mkdir -p a/b && touch a/b/x` before the watch on `a` was set).
const NEW_DIR_REPORT_LIMIT: usize = 10_000;

/// Notes one watch may write to its service's log; more go to the daemon log.
const NOTES_PER_WATCH: usize = 10;

/// A watched directory.
struct Watched {
    path: PathBuf,
    /// How deep below it is watched; `None` when it is watched only to see
    /// a missing root directory appear inside it.
    depth: Option<Depth>,
}

/// A root whose directory does not exist (for this user) yet.
struct Waiting {
    root: usize,
    /// The nearest existing directory above it, watched for its creation;
    /// `None` when even that cannot be watched.
    anchor: Option<PathBuf>,
}

/// Matching changes seen since the last event was sent.
struct Burst {
    started: Instant,
    last_change: Instant,
    seen: HashSet<PathBuf>,
    paths: Vec<PathBuf>,
    missed_events: bool,
}

impl Burst {
    fn new(now: Instant) -> Burst {
        Burst {
            started: now,
            last_change: now,
            seen: HashSet::new(),
            paths: Vec::new(),
            missed_events: false,
        }
    }
}

pub(super) struct Subscription {
    pub(super) id: u64,
    /// Whose budget its watches count against.
    pub(super) uid: u32,
    service: String,
    /// `None`: the daemon's own identity (a service running as root).
    identity: Option<FsIdentity>,
    filter: ChangeFilter,
    debounce: Duration,
    max_burst: Duration,
    reports: mpsc::UnboundedSender<WatchReport>,
    dirs: HashMap<WatchDescriptor, Watched>,
    paths: HashMap<PathBuf, WatchDescriptor>,
    waiting: Vec<Waiting>,
    burst: Option<Burst>,
    noted: HashSet<String>,
    notes_sent: usize,
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_dir())
}

/// Events that change what is in a directory or a file's content or
/// metadata (opening and reading never count).
fn is_change(mask: AddWatchFlags) -> bool {
    mask.intersects(
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO,
    )
}

impl Subscription {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: u64,
        service: String,
        identity: Option<FsIdentity>,
        filter: ChangeFilter,
        debounce: Duration,
        max_burst: Duration,
        reports: mpsc::UnboundedSender<WatchReport>,
    ) -> Subscription {
        Subscription {
            id,
            uid: identity.as_ref().map_or(0, |identity| identity.uid),
            service,
            identity,
            filter,
            debounce,
            max_burst,
            reports,
            dirs: HashMap::new(),
            paths: HashMap::new(),
            waiting: Vec::new(),
            burst: None,
            noted: HashSet::new(),
            notes_sent: 0,
        }
    }

    /// Runs `f` with the service user's file-access identity; `None` (and a
    /// note) if the thread cannot take it.
    fn as_user<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let entered = match self.identity.clone().map(|identity| identity.enter()) {
            None => None,
            Some(Ok(entered)) => Some(entered),
            Some(Err(e)) => {
                let text = format!(
                    "cannot look at its files as uid {}: {e}; changes are not seen",
                    self.uid
                );
                self.note(Some("identity".into()), text);
                return None;
            }
        };
        let result = f(self);
        drop(entered);
        Some(result)
    }

    /// Sets up the watches of every root.
    pub(super) fn set_up(&mut self, watches: &mut Watches) {
        self.as_user(|s| {
            for root in 0..s.filter.roots.len() {
                s.resolve(root, watches, false);
            }
        });
    }

    /// Lets go of every watch (the service stopped or failed).
    pub(super) fn release_all(&mut self, watches: &mut Watches) {
        for wd in self.dirs.keys() {
            watches.release(self.id, self.uid, *wd);
        }
        self.dirs.clear();
        self.paths.clear();
    }

    /// Watches root `index` if its directory exists, else the nearest
    /// directory above it, for its creation. `report` lists what a new
    /// directory already holds as changes.
    fn resolve(&mut self, index: usize, watches: &mut Watches, report: bool) {
        let root = self.filter.roots[index].clone();
        if self.filter.is_ignored(&root.base) {
            return;
        }
        let was_waiting = self.waiting.iter().any(|w| w.root == index);
        self.waiting.retain(|w| w.root != index);
        if is_dir(&root.base) {
            self.watch_tree(watches, &root.base, root.depth, true, report);
            self.drop_unused_anchors(watches);
            return;
        }
        // Missing, or out of this user's reach: the same to the service.
        // Said each time it goes missing, not again while it stays so.
        if !was_waiting {
            let text = format!(
                "{} does not exist; watching for it to appear",
                root.base.display()
            );
            self.note(None, text);
        }
        let anchor = root.base.ancestors().skip(1).find(|dir| is_dir(dir));
        let anchor = anchor.and_then(|anchor| {
            let watched = self.paths.contains_key(anchor)
                || match watches.add(self.id, self.uid, anchor, true) {
                    Ok(wd) => {
                        // Already watched under another name, its events
                        // come under that one: no anchor here.
                        let fresh = !self.dirs.contains_key(&wd);
                        if fresh {
                            self.remember(wd, anchor, None);
                        }
                        fresh
                    }
                    Err(failure) => {
                        let why = format!("so {} is not seen if it appears", root.base.display());
                        self.note_failure(anchor, failure, watches.budget(), &why);
                        false
                    }
                };
            watched.then(|| anchor.to_path_buf())
        });
        self.waiting.push(Waiting {
            root: index,
            anchor,
        });
        self.drop_unused_anchors(watches);
    }

    fn remember(&mut self, wd: WatchDescriptor, path: &Path, depth: Option<Depth>) {
        self.paths.insert(path.to_path_buf(), wd);
        self.dirs.insert(
            wd,
            Watched {
                path: path.to_path_buf(),
                depth,
            },
        );
    }

    /// Watches `start` and the directories below it down to `depth`.
    fn watch_tree(
        &mut self,
        watches: &mut Watches,
        start: &Path,
        depth: Depth,
        follow_start: bool,
        report: bool,
    ) {
        let mut reportable = NEW_DIR_REPORT_LIMIT;
        let mut pending = vec![(start.to_path_buf(), depth, follow_start)];
        while let Some((dir, depth, follow)) = pending.pop() {
            if self.filter.is_ignored(&dir) {
                continue;
            }
            match self.paths.get(&dir).and_then(|wd| self.dirs.get_mut(wd)) {
                Some(watched) if watched.depth.is_some_and(|d| d.covers(depth)) => continue,
                Some(watched) => watched.depth = Some(depth),
                None => match watches.add(self.id, self.uid, &dir, follow) {
                    // The same directory under another name (a bind mount):
                    // its events already arrive under the first one.
                    Ok(wd) if self.dirs.contains_key(&wd) => continue,
                    Ok(wd) => self.remember(wd, &dir, Some(depth)),
                    Err(AddFailure::Gone) => continue,
                    Err(failure) => {
                        let stop =
                            matches!(failure, AddFailure::OverBudget | AddFailure::KernelLimit);
                        let why = "changes in it are not seen";
                        self.note_failure(&dir, failure, watches.budget(), why);
                        if stop {
                            return;
                        }
                        continue;
                    }
                },
            }
            let below = depth.below();
            if below.is_none() && !report {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if self.filter.is_ignored(&path) {
                    continue;
                }
                // Symlinks are not followed: they could lead anywhere, or
                // in circles.
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    if let Some(below) = below {
                        pending.push((path, below, false));
                    }
                } else if report && reportable > 0 && self.filter.matches(&path) {
                    reportable -= 1;
                    self.changed(path);
                }
            }
        }
    }

    /// Anchor-only watches no waiting root needs any more.
    fn drop_unused_anchors(&mut self, watches: &mut Watches) {
        let unused: Vec<WatchDescriptor> = self
            .dirs
            .iter()
            .filter(|(_, watched)| {
                watched.depth.is_none()
                    && !self
                        .waiting
                        .iter()
                        .any(|w| w.anchor.as_deref() == Some(watched.path.as_path()))
            })
            .map(|(wd, _)| *wd)
            .collect();
        for wd in unused {
            self.forget(wd, watches);
        }
    }

    fn forget(&mut self, wd: WatchDescriptor, watches: &mut Watches) {
        if let Some(watched) = self.dirs.remove(&wd) {
            self.paths.remove(&watched.path);
            watches.release(self.id, self.uid, wd);
        }
    }

    /// Forgets every watch at or below `prefix` (it moved away).
    fn forget_below(&mut self, prefix: &Path, watches: &mut Watches) {
        let gone: Vec<WatchDescriptor> = self
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, wd)| *wd)
            .collect();
        for wd in gone {
            self.forget(wd, watches);
        }
    }

    /// Roots whose directory is `path`, or that wait on an anchor at `path`.
    fn roots_at(&self, path: &Path) -> Vec<usize> {
        let mut roots: Vec<usize> = (0..self.filter.roots.len())
            .filter(|i| self.filter.roots[*i].base == path)
            .collect();
        roots.extend(
            self.waiting
                .iter()
                .filter(|w| w.anchor.as_deref() == Some(path))
                .map(|w| w.root),
        );
        roots
    }

    /// The kernel dropped `wd` (its directory was removed); it is no longer
    /// held. Roots that lived there wait for their directory again.
    pub(super) fn lost(&mut self, wd: WatchDescriptor, watches: &mut Watches) {
        let Some(watched) = self.dirs.remove(&wd) else {
            return;
        };
        self.paths.remove(&watched.path);
        let roots = self.roots_at(&watched.path);
        if !roots.is_empty() {
            self.as_user(|s| {
                for root in roots {
                    s.resolve(root, watches, true);
                }
            });
        }
    }

    pub(super) fn on_event(&mut self, event: &InotifyEvent, watches: &mut Watches) {
        let Some(watched) = self.dirs.get(&event.wd) else {
            return;
        };
        let (dir, depth) = (watched.path.clone(), watched.depth);
        let mask = event.mask;
        let Some(name) = &event.name else {
            // The directory itself moved: what was watched under its old
            // name is stale; a root there waits to appear again.
            if mask.contains(AddWatchFlags::IN_MOVE_SELF) {
                let roots = self.roots_at(&dir);
                self.forget_below(&dir, watches);
                self.as_user(|s| {
                    for root in roots {
                        s.resolve(root, watches, true);
                    }
                });
            }
            return;
        };
        let path = dir.join(name);
        let is_dir = mask.contains(AddWatchFlags::IN_ISDIR);
        if is_dir && mask.contains(AddWatchFlags::IN_MOVED_FROM) {
            self.forget_below(&path, watches);
        }
        if depth.is_some() && is_change(mask) && self.filter.matches(&path) {
            self.changed(path.clone());
        }
        if !(is_dir && mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)) {
            return;
        }
        let below = depth.and_then(Depth::below);
        let appearing: Vec<usize> = self
            .waiting
            .iter()
            .filter(|w| {
                w.anchor.as_deref() == Some(dir.as_path())
                    && self.filter.roots[w.root].base.starts_with(&path)
            })
            .map(|w| w.root)
            .collect();
        if below.is_none() && appearing.is_empty() {
            return;
        }
        self.as_user(|s| {
            if let Some(below) = below {
                s.watch_tree(watches, &path, below, false, true);
            }
            for root in appearing {
                s.resolve(root, watches, true);
            }
        });
    }

    fn changed(&mut self, path: PathBuf) {
        let now = Instant::now();
        let burst = self.burst.get_or_insert_with(|| Burst::new(now));
        burst.last_change = now;
        if burst.seen.insert(path.clone()) && burst.paths.len() < MAX_PATHS_PER_EVENT {
            burst.paths.push(path);
        }
    }

    /// The kernel's queue overflowed: some changes are unknown.
    pub(super) fn missed_events(&mut self) {
        let now = Instant::now();
        let burst = self.burst.get_or_insert_with(|| Burst::new(now));
        burst.missed_events = true;
        burst.last_change = now;
    }

    /// When the current burst is due: once it has been quiet for the
    /// debounce window, or has gone on for `max_burst`.
    pub(super) fn due(&self) -> Option<Instant> {
        self.burst
            .as_ref()
            .map(|burst| (burst.last_change + self.debounce).min(burst.started + self.max_burst))
    }

    pub(super) fn send_if_due(&mut self, now: Instant) {
        if self.due().is_none_or(|due| due > now) {
            return;
        }
        let Some(burst) = self.burst.take() else {
            return;
        };
        let event = WatchEvent {
            service: self.service.clone(),
            watch: self.id,
            omitted: burst.seen.len() - burst.paths.len(),
            paths: burst.paths,
            missed_events: burst.missed_events,
        };
        tracing::debug!(service = %self.service, paths = event.paths.len(), "watched files changed");
        // The receiver is gone only while the watch is being removed.
        let _ = self.reports.send(WatchReport::Changed(event));
    }

    fn note_failure(&mut self, dir: &Path, failure: AddFailure, budget: usize, why: &str) {
        let dir = dir.display();
        let (key, text) = match failure {
            AddFailure::OverBudget => (
                "budget".to_string(),
                format!(
                    "uid {} already has {budget} directories watched, the most one user may; \
                     {dir} and the directories not yet watched are left out (the service keeps \
                     running)",
                    self.uid
                ),
            ),
            AddFailure::KernelLimit => (
                "kernel limit".to_string(),
                format!(
                    "the system's inotify watch limit (fs.inotify.max_user_watches) is reached; \
                     {dir} and the directories not yet watched are left out (the service keeps \
                     running)"
                ),
            ),
            AddFailure::Denied => (
                format!("denied {dir}, {why}"),
                format!("cannot watch {dir} (permission denied), {why}"),
            ),
            AddFailure::Gone => return,
            AddFailure::Other(errno) => (
                format!("failed {dir}, {why}"),
                format!("cannot watch {dir} ({}), {why}", errno.desc()),
            ),
        };
        self.note(Some(key), text);
    }

    /// Writes `text` to the service's log, once per `key` when given, and
    /// at most [`NOTES_PER_WATCH`] notes per watch.
    fn note(&mut self, key: Option<String>, text: String) {
        tracing::info!(service = %self.service, "watch: {text}");
        if key.is_some_and(|key| !self.noted.insert(key)) || self.notes_sent > NOTES_PER_WATCH {
            return;
        }
        self.notes_sent += 1;
        let text = if self.notes_sent > NOTES_PER_WATCH {
            "further notes about file watching go to the daemon log".to_string()
        } else {
            text
        };
        let _ = self.reports.send(WatchReport::Note {
            service: self.service.clone(),
            watch: self.id,
            text,
        });
    }
}
