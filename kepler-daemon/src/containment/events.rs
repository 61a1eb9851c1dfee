//! "This cgroup is empty now": `populated 0` in `cgroup.events`, learned
//! through inotify rather than by polling.
//!
//! One inotify instance serves every cgroup, read by one dedicated OS thread
//! (`kepler-cgroups`, like the reaper: it serves every tokio runtime, tests
//! included). The kernel signals a change of `cgroup.events` as a
//! modification of the file; the thread wakes the waiters of that cgroup,
//! who read the file again. A cgroup handed over with [`remove_when_empty`]
//! goes to the removal thread ([`super::removal`]) once its last process
//! has exited, so a cancelled hook or probe leaves no directory behind.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::Notify;

use super::cgroup::{Cgroup, MemberList};
use super::removal;

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
/// just signalled its members through it): resolves once it has no member.
/// Checking through the open list spares opening `cgroup.events`, and most
/// stops find the list empty at once and need no watch at all.
pub async fn wait_no_members(cgroup: &Cgroup, members: &MemberList<'_>) {
    if members.is_empty() {
        return;
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
            return;
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
    match watcher().and_then(|w| w.watch(cgroup.dir(), None)) {
        Ok(watch) => Some(watch),
        // Removed already: the caller's next read says it is empty.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(cgroup = %cgroup.dir().display(), "cannot watch cgroup.events: {e}");
            None
        }
    }
}

/// Removes `cgroup` once it is empty: soon if it already is, else when
/// `cgroup.events` says so. For cgroups nobody waits on any more (their
/// processes were just killed).
pub fn remove_when_empty(cgroup: &Cgroup) {
    if !cgroup.is_populated() {
        cgroup.remove_later();
        return;
    }
    match watcher().and_then(|w| w.watch(cgroup.dir(), Some(cgroup.generation()))) {
        // The watch stays registered until the cgroup empties.
        Ok(watch) => {
            let (watcher, wd) = (watch.watcher, watch.wd);
            std::mem::forget(watch);
            // It may have emptied before the watch existed: then no event
            // will come.
            if !cgroup.is_populated() {
                watcher.forget(wd);
                cgroup.remove_later();
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
    /// Remove the cgroup when it empties (see [`remove_when_empty`]): the
    /// generation of the handle that asked.
    remove: Option<u64>,
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
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
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
    fn watch(&'static self, dir: &Path, remove: Option<u64>) -> io::Result<Watch> {
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
            remove: None,
        });
        entry.watchers += 1;
        if remove.is_some() {
            entry.remove = remove;
        }
        Ok(Watch {
            watcher: self,
            wd,
            notify: Arc::clone(&entry.notify),
        })
    }

    fn run(&self) {
        loop {
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => self.handle_events(),
                Err(errno) => {
                    tracing::error!(%errno, "cgroup watcher: poll failed");
                    std::thread::sleep(FALLBACK_RECHECK);
                }
            }
        }
    }

    fn handle_events(&self) {
        let events = match self.inotify.read_events() {
            Ok(events) => events,
            Err(Errno::EINTR | Errno::EAGAIN) => return,
            Err(errno) => {
                tracing::error!(%errno, "cgroup watcher: reading inotify failed");
                std::thread::sleep(FALLBACK_RECHECK);
                return;
            }
        };
        let mut entries = lock(&self.entries);
        for event in events {
            let Some(entry) = entries.get(&event.wd) else {
                continue;
            };
            entry.notify.notify_waiters();
            let ignored = event.mask.contains(AddWatchFlags::IN_IGNORED);
            let mut emptied = false;
            if let (Some(generation), false) = (entry.remove, ignored) {
                let cgroup = Cgroup::at(entry.dir.clone());
                if !cgroup.is_populated() {
                    // The removal thread retries what the kernel refuses
                    // for a moment.
                    removal::remove_later(&entry.dir, generation);
                    emptied = true;
                }
            }
            if ignored || emptied {
                entries.remove(&event.wd);
            }
            if emptied {
                // Removing a cgroup does not reliably drop the inotify
                // watch on its `cgroup.events` (kernfs may keep the inode),
                // so it is dropped here.
                let _ = self.inotify.rm_watch(event.wd);
            }
        }
    }

    /// Drops a removal watch (the one [`remove_when_empty`] forgot) whose
    /// cgroup is gone already, with the kernel's watch.
    fn forget(&self, wd: WatchDescriptor) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(&wd) {
            entry.remove = None;
            entry.watchers -= 1;
            if entry.watchers == 0 {
                entries.remove(&wd);
                let _ = self.inotify.rm_watch(wd);
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
        if entry.watchers == 0 && entry.remove.is_none() {
            entries.remove(&self.wd);
            let _ = self.watcher.inotify.rm_watch(self.wd);
        }
    }
}
