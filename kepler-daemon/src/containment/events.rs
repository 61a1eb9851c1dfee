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
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::Notify;

use super::cgroup::{Cgroup, MemberList};

/// Only if inotify itself is unavailable: how often a waiter re-reads
/// `cgroup.events` instead.
const FALLBACK_RECHECK: Duration = Duration::from_millis(100);

/// How often an empty cgroup the kernel would not let go yet is tried again.
const REMOVAL_RETRY_MS: u16 = 50;

/// Tries (10 s) before an empty cgroup that cannot be removed is left.
const REMOVAL_TRIES: u32 = 200;

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
/// list spares opening `cgroup.events`, and most stops find the list empty
/// at once and need no watch at all.
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
            let (watcher, wd) = (watch.watcher, watch.wd);
            std::mem::forget(watch);
            // It may have emptied before the watch existed: then no event
            // will come, and a removal the kernel refuses now is retried.
            if !cgroup.is_populated() {
                match cgroup.remove() {
                    // Gone, by us or someone else: no event is to come.
                    Ok(()) => watcher.forget(wd),
                    Err(_) => watcher.retry_removal(wd),
                }
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
    /// Removals handed to the thread by [`Watcher::retry_removal`].
    retry: Mutex<Vec<WatchDescriptor>>,
    /// Wakes the thread for them.
    wake: EventFd,
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
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| format!("cannot create an inotify instance: {e}"))?;
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| format!("cannot create an eventfd: {e}"))?;
        let watcher: &'static Watcher = Box::leak(Box::new(Watcher {
            inotify,
            entries: Mutex::new(HashMap::new()),
            retry: Mutex::new(Vec::new()),
            wake,
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
        // Cgroups handed over for removal that were empty but could not be
        // removed yet (the kernel may refuse `rmdir` for a moment after the
        // last process left): no further event comes for them, so they are
        // retried on a short timer until they go.
        let mut unremoved: Vec<(WatchDescriptor, u32)> = Vec::new();
        loop {
            let timeout = if unremoved.is_empty() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(REMOVAL_RETRY_MS)
            };
            let (readable, woken) = self.wait(timeout);
            if woken {
                let _ = self.wake.read();
                unremoved.extend(lock(&self.retry).drain(..).map(|wd| (wd, 0)));
            }
            if readable {
                self.handle_events(&mut unremoved);
            }
            if !unremoved.is_empty() {
                let mut entries = lock(&self.entries);
                unremoved.retain_mut(|(wd, tries)| {
                    let Some(entry) = entries.get(wd) else {
                        return false;
                    };
                    match Cgroup::at(entry.dir.clone()).remove() {
                        Ok(()) => {
                            entries.remove(wd);
                            let _ = self.inotify.rm_watch(*wd);
                            false
                        }
                        Err(e) if *tries >= REMOVAL_TRIES => {
                            tracing::warn!(cgroup = %entry.dir.display(), "cannot remove an empty cgroup: {e}");
                            false
                        }
                        Err(_) => {
                            *tries += 1;
                            true
                        }
                    }
                });
            }
        }
    }

    /// Blocks until inotify has events or the thread is woken (or
    /// `timeout`): which of the two.
    fn wait(&self, timeout: PollTimeout) -> (bool, bool) {
        let mut fds = [
            PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) => {
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            }
            Err(Errno::EINTR) => (false, false),
            Err(errno) => {
                tracing::error!(%errno, "cgroup watcher: poll failed");
                std::thread::sleep(FALLBACK_RECHECK);
                (true, true)
            }
        }
    }

    fn handle_events(&self, unremoved: &mut Vec<(WatchDescriptor, u32)>) {
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
            let mut removed = false;
            if entry.remove && !ignored {
                let cgroup = Cgroup::at(entry.dir.clone());
                if !cgroup.is_populated() {
                    removed = cgroup.remove().is_ok();
                    if !removed && !unremoved.iter().any(|(wd, _)| *wd == event.wd) {
                        unremoved.push((event.wd, 0));
                    }
                }
            }
            if ignored || removed {
                entries.remove(&event.wd);
                unremoved.retain(|(wd, _)| *wd != event.wd);
            }
            if removed {
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
            entry.remove = false;
            entry.watchers -= 1;
            if entry.watchers == 0 {
                entries.remove(&wd);
                let _ = self.inotify.rm_watch(wd);
            }
        }
    }

    /// Hands a cgroup that emptied before its watch existed, and could not
    /// be removed then, to the thread to retry.
    fn retry_removal(&self, wd: WatchDescriptor) {
        lock(&self.retry).push(wd);
        let _ = self.wake.write(1);
    }
}

impl Watch {
    /// The watched cgroup was removed by its waiter. Removing a cgroup does
    /// not reliably drop the inotify watch on its `cgroup.events`, so the
    /// last waiter drops it as always, whoever else asked for its removal.
    fn went_with_its_directory(self) {
        let watch = std::mem::ManuallyDrop::new(self);
        let mut entries = lock(&watch.watcher.entries);
        if let Some(entry) = entries.get_mut(&watch.wd) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                entries.remove(&watch.wd);
                let _ = watch.watcher.inotify.rm_watch(watch.wd);
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
