//! "This cgroup is empty now": `populated 0` in `cgroup.events`, learned
//! through inotify rather than by polling.
//!
//! One inotify instance serves every cgroup, read by one dedicated OS thread
//! (`kepler-cgroups`, like the reaper: it serves every tokio runtime, tests
//! included). The kernel signals a change of `cgroup.events` as a
//! modification of the file; the thread wakes the waiters of that cgroup,
//! who read the file again. A cgroup handed over with [`remove_when_empty`]
//! is removed by the thread itself once its last process has exited, so a
//! cancelled hook or probe leaves no directory behind.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::Notify;

use super::cgroup::{Cgroup, MemberList};

/// Only if inotify itself is unavailable: how often a waiter re-reads
/// `cgroup.events` instead.
const FALLBACK_RECHECK: Duration = Duration::from_millis(100);

/// Resolves once no live process is left in `cgroup` (or below it).
pub async fn wait_empty(cgroup: &Cgroup) {
    // Kept open: each check is then one read.
    let Ok(events) = cgroup.events() else {
        return; // removed: nothing can be in it
    };
    let watch = watch_events(cgroup);
    let notify = watch.as_ref().map(|w| Arc::clone(&w.notify));
    loop {
        let notified = notify.as_ref().map(|n| n.notified());
        let mut notified = std::pin::pin!(notified);
        // Register before reading so a change in between is not missed.
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            notified.enable();
        }
        if !events.is_populated() {
            return;
        }
        match notified.as_pin_mut() {
            Some(notified) => notified.await,
            None => tokio::time::sleep(FALLBACK_RECHECK).await,
        }
    }
}

/// For a leaf cgroup whose `cgroup.procs` is open already (a stop has
/// just signalled its members through it): waits until it has no member,
/// then removes it; returns whether it is gone. Checking through the open
/// list spares opening `cgroup.events`, and removing the cgroup while still
/// watching spares the explicit `inotify_rm_watch` (the kernel drops the
/// watch with the directory): most of what a wait costs.
pub async fn wait_no_members_then_remove(cgroup: &Cgroup, members: &MemberList<'_>) -> bool {
    // Often already so: then no watch is needed at all.
    if members.is_empty() {
        return cgroup.remove().is_ok();
    }
    let watch = watch_events(cgroup);
    let notify = watch.as_ref().map(|w| Arc::clone(&w.notify));
    loop {
        let notified = notify.as_ref().map(|n| n.notified());
        let mut notified = std::pin::pin!(notified);
        // Register before reading so a change in between is not missed.
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            notified.enable();
        }
        if members.is_empty() {
            let removed = cgroup.remove().is_ok();
            if let (true, Some(watch)) = (removed, watch) {
                watch.went_with_its_directory();
            }
            return removed;
        }
        match notified.as_pin_mut() {
            Some(notified) => notified.await,
            None => tokio::time::sleep(FALLBACK_RECHECK).await,
        }
    }
}

/// A watch on `cgroup.events`, or `None` (logged) if inotify fails: then
/// waiters re-read on a timer.
fn watch_events(cgroup: &Cgroup) -> Option<Watch> {
    match watcher().and_then(|w| w.watch(cgroup.dir(), false)) {
        Ok(watch) => Some(watch),
        // Removed already: the caller's next read says it is empty.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(cgroup = %cgroup.dir().display(), "cannot watch cgroup.events: {e}");
            None
        }
    }
}

/// Removes `cgroup` as soon as it is empty: now if it already is, else when
/// `cgroup.events` says so. For cgroups nobody waits on any more (their
/// processes were just killed).
pub fn remove_when_empty(cgroup: &Cgroup) {
    if !cgroup.is_populated() && cgroup.remove().is_ok() {
        return;
    }
    match watcher().and_then(|w| w.watch(cgroup.dir(), true)) {
        // The watch stays registered until the thread removes the cgroup.
        Ok(watch) => {
            std::mem::forget(watch);
            // It may have emptied before the watch existed.
            if !cgroup.is_populated() && cgroup.remove().is_ok() {
                tracing::trace!(cgroup = %cgroup.dir().display(), "removed");
            }
        }
        Err(e) => tracing::warn!(
            cgroup = %cgroup.dir().display(),
            "cannot watch cgroup.events, so the cgroup stays once empty: {e}"
        ),
    }
}

struct Watcher {
    inotify: Inotify,
    entries: Mutex<HashMap<WatchDescriptor, Entry>>,
}

struct Entry {
    dir: PathBuf,
    notify: Arc<Notify>,
    /// Live [`Watch`]es; the inotify watch goes with the last one.
    watchers: usize,
    /// Remove the cgroup when it empties (see [`remove_when_empty`]).
    remove: bool,
}

/// One waiter's interest in a cgroup.
struct Watch {
    watcher: &'static Watcher,
    wd: WatchDescriptor,
    notify: Arc<Notify>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process-wide watcher, started on first use.
fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<&'static Watcher, String>> = OnceLock::new();
    let started = WATCHER.get_or_init(|| {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot create an inotify instance: {e}"))?;
        let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
            inotify,
            entries: Mutex::new(HashMap::new()),
        }));
        std::thread::Builder::new()
            .name("kepler-cgroups".into())
            .spawn(move || watcher.run())
            .map(|_| watcher)
            .map_err(|e| format!("cannot start the cgroup watcher thread: {e}"))
    });
    started.clone().map_err(io::Error::other)
}

impl Watcher {
    fn watch(&'static self, dir: &Path, remove: bool) -> io::Result<Watch> {
        let mut entries = lock(&self.entries);
        // Under the lock: a watch being dropped cannot remove this inode's
        // watch descriptor between our add and our count.
        let wd = self
            .inotify
            .add_watch(&dir.join("cgroup.events"), AddWatchFlags::IN_MODIFY)?;
        let entry = entries.entry(wd).or_insert_with(|| Entry {
            dir: dir.to_path_buf(),
            notify: Arc::new(Notify::new()),
            watchers: 0,
            remove: false,
        });
        entry.watchers += 1;
        entry.remove |= remove;
        Ok(Watch {
            watcher: self,
            wd,
            notify: Arc::clone(&entry.notify),
        })
    }

    fn run(&self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!(%errno, "cgroup watcher: reading inotify failed");
                    std::thread::sleep(FALLBACK_RECHECK);
                    continue;
                }
            };
            let mut entries = lock(&self.entries);
            for event in events {
                let Some(entry) = entries.get(&event.wd) else {
                    continue;
                };
                entry.notify.notify_waiters();
                let ignored = event.mask.contains(AddWatchFlags::IN_IGNORED);
                let removed = entry.remove && {
                    let cgroup = Cgroup::at(entry.dir.clone());
                    !cgroup.is_populated() && cgroup.remove().is_ok()
                };
                if ignored || removed {
                    // The kernel drops the watch with the directory.
                    entries.remove(&event.wd);
                }
            }
        }
    }
}

impl Watch {
    /// The watched cgroup was removed, which removed the kernel's watch: only
    /// our bookkeeping is left to drop.
    fn went_with_its_directory(self) {
        let watch = std::mem::ManuallyDrop::new(self);
        let mut entries = lock(&watch.watcher.entries);
        if let Some(entry) = entries.get_mut(&watch.wd) {
            entry.watchers -= 1;
            if entry.watchers == 0 && !entry.remove {
                entries.remove(&watch.wd);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut entries = lock(&self.watcher.entries);
        let Some(entry) = entries.get_mut(&self.wd) else {
            return;
        };
        entry.watchers -= 1;
        if entry.watchers == 0 && !entry.remove {
            entries.remove(&self.wd);
            let _ = self.watcher.inotify.rm_watch(self.wd);
        }
    }
}
