//! Empty cgroups are removed by a thread of their own (`kepler-cgroup-rm`),
//! after the stops that emptied them are over.
//!
//! `rmdir` of a cgroup takes the kernel's global cgroup lock, which the
//! kernel's own clean-up of exited processes takes too: ten thousand stops
//! removing their cgroups from the runtime's workers spent most of their
//! time spinning on that lock, and the stop of a whole config took four
//! times as long as with process groups. A stop is over when its cgroup is
//! empty; removing the directory is housekeeping, done one at a time, at a
//! lower priority, once a burst of stops has settled.
//!
//! A cgroup may be wanted again before the thread gets to it (a restart
//! reuses `<service>.service`). Each handle made by [`Cgroup::create`]
//! carries a generation, and the path's current generation is kept here:
//! creating the cgroup again makes the older handle's removal request
//! stale, and the thread takes a request in hand only while it is current,
//! so it never removes a cgroup a new process is about to join.
//!
//! The thread also closes the `cgroup.procs` descriptors the stops opened
//! (see [`close_later`]), for the same reason: the kernel's clean-up of an
//! open cgroup file is housekeeping too.
//!
//! [`Cgroup::create`]: super::Cgroup::create

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

/// Requests wait until none came for this long (the burst of stops is
/// over), so removals do not compete with the stops for the CPU...
const QUIET: Duration = Duration::from_millis(100);

/// ...but never longer than this.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// How long an empty cgroup the kernel would not let go yet waits before
/// it is tried again (`rmdir` fails with EBUSY for a moment after the last
/// process left).
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Tries (10 s) before an empty cgroup that cannot be removed is left.
const MAX_TRIES: u32 = 200;

/// The removal thread's niceness: housekeeping yields to the daemon's own
/// work, and to the services where the kernel does not schedule sessions
/// as groups. Where it does (see `process::priority`), a niceness only
/// counts within the daemon's session, so against the services the thread
/// has its session's share; the quiet spell above keeps it out of bursts.
const NICENESS: libc::c_int = 10;

struct Request {
    dir: PathBuf,
    generation: u64,
    /// When it may be tried.
    due: Instant,
    tries: u32,
}

#[derive(Default)]
struct Removals {
    /// The current generation of each cgroup made by [`create`] and not
    /// removed yet.
    ///
    /// An `IndexMap` because it keeps each key's hash: growing it does not
    /// hash every path again, which for 10,000 paths spread over the heap
    /// cost 25 ms a doubling.
    current: IndexMap<PathBuf, u64>,
    /// Requests in the order they came.
    queue: VecDeque<Request>,
    /// Requests the kernel refused for now.
    refused: Vec<Request>,
    /// The directory being removed, outside the lock.
    removing: Option<PathBuf>,
    /// Descriptors to close (see [`close_later`]), and since when the
    /// oldest has waited.
    closing: Vec<File>,
    closing_since: Option<Instant>,
    /// Descriptors being closed, outside the lock.
    closing_in_hand: bool,
    /// When the last request came.
    last_request: Option<Instant>,
    /// Callers of [`drain`] waiting: the queue is served without delay.
    draining: usize,
    next_generation: u64,
    /// Whether the thread runs; if not, cgroups are removed at once.
    started: bool,
}

/// What the thread does next.
enum Work {
    Remove(Request),
    Close(Vec<File>),
}

struct Remover {
    removals: Mutex<Removals>,
    /// Signalled on every change: new requests, a removal done.
    changed: Condvar,
}

fn remover() -> &'static Remover {
    static REMOVER: OnceLock<Remover> = OnceLock::new();
    static THREAD: OnceLock<()> = OnceLock::new();
    let remover = REMOVER.get_or_init(|| Remover {
        removals: Mutex::new(Removals {
            next_generation: 1,
            ..Removals::default()
        }),
        changed: Condvar::new(),
    });
    THREAD.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("kepler-cgroup-rm".into())
            .spawn(move || remover.run());
        match spawned {
            Ok(_) => lock(&remover.removals).started = true,
            Err(e) => tracing::error!(
                "cannot start the cgroup removal thread, so cgroups are removed at once: {e}"
            ),
        }
    });
    remover
}

fn lock(removals: &Mutex<Removals>) -> MutexGuard<'_, Removals> {
    removals.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `rmdir`; a directory that is gone already is fine.
fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl Remover {
    /// Waits out a removal of `dir` the thread has in hand.
    fn not_removing<'a>(
        &'a self,
        mut removals: MutexGuard<'a, Removals>,
        dir: &Path,
    ) -> MutexGuard<'a, Removals> {
        while removals.removing.as_deref() == Some(dir) {
            removals = self
                .changed
                .wait(removals)
                .unwrap_or_else(PoisonError::into_inner);
        }
        removals
    }
}

/// Makes (or reuses) the cgroup directory `dir` for a new owner and returns
/// the owner's generation. A removal still queued for `dir` goes stale.
///
/// With `parent` (the open directory `dir` is in), the directory is made
/// relative to it: no walk from `/` for each of thousands of services.
pub(super) fn create(dir: &Path, parent: Option<&OwnedFd>) -> io::Result<u64> {
    let generation = adopt(dir);
    match make_dir(dir, parent) {
        Ok(()) => Ok(generation),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(generation),
        Err(e) => {
            let mut removals = lock(&remover().removals);
            if removals.current.get(dir) == Some(&generation) {
                removals.current.swap_remove(dir);
            }
            Err(e)
        }
    }
}

fn make_dir(dir: &Path, parent: Option<&OwnedFd>) -> io::Result<()> {
    let (Some(parent), Some(leaf)) = (parent, dir.file_name()) else {
        return std::fs::create_dir(dir);
    };
    nix::sys::stat::mkdirat(
        Some(parent.as_raw_fd()),
        leaf,
        nix::sys::stat::Mode::from_bits_truncate(0o777),
    )
    .map_err(io::Error::from)
}

/// Takes the existing cgroup `dir` as a new owner's (one a previous daemon
/// handed over, or one [`create`] makes next).
pub(super) fn adopt(dir: &Path) -> u64 {
    let remover = remover();
    let mut removals = remover.not_removing(lock(&remover.removals), dir);
    let generation = removals.next_generation;
    removals.next_generation += 1;
    // From here on the thread takes no older request for `dir` in hand.
    removals.current.insert(dir.to_path_buf(), generation);
    generation
}

/// Asks for the empty cgroup `dir` of generation `generation` to be removed
/// soon. Ignored if the cgroup was created again since. Generation 0 (a
/// handle that owns nothing) removes it now.
pub(super) fn remove_later(dir: &Path, generation: u64) {
    if generation == 0 {
        if let Err(e) = remove_now(dir) {
            tracing::debug!(cgroup = %dir.display(), "cannot remove a cgroup: {e}");
        }
        return;
    }
    let remover = remover();
    let mut removals = lock(&remover.removals);
    if removals.current.get(dir) != Some(&generation) {
        return;
    }
    if !removals.started {
        if let Err(e) = remove_dir(dir) {
            tracing::warn!(cgroup = %dir.display(), "cannot remove an empty cgroup: {e}");
        }
        removals.current.swap_remove(dir);
        return;
    }
    let now = Instant::now();
    let idle = removals.is_idle();
    removals.queue.push_back(Request {
        dir: dir.to_path_buf(),
        generation,
        due: now + MAX_DELAY,
        tries: 0,
    });
    removals.last_request = Some(now);
    // A thread with requests in hand wakes on its own to look again; only an
    // idle one needs waking (a burst of stops wakes it once).
    if idle {
        remover.changed.notify_all();
    }
}

/// Closes `file` (a cgroup's `cgroup.procs`) on the removal thread, with
/// the removals once the burst of stops has settled; at once if the thread
/// does not run.
pub(super) fn close_later(file: File) {
    let remover = remover();
    let mut removals = lock(&remover.removals);
    if !removals.started {
        drop(removals);
        drop(file);
        return;
    }
    let now = Instant::now();
    let idle = removals.is_idle();
    removals.closing.push(file);
    removals.closing_since.get_or_insert(now);
    removals.last_request = Some(now);
    if idle {
        remover.changed.notify_all();
    }
}

/// Removes the empty cgroup `dir` now, whoever made it.
pub(super) fn remove_now(dir: &Path) -> io::Result<()> {
    let remover = remover();
    let mut removals = remover.not_removing(lock(&remover.removals), dir);
    remove_dir(dir)?;
    removals.current.swap_remove(dir);
    Ok(())
}

/// Waits until every removal asked for so far was tried (a cgroup the
/// kernel would not let go yet excepted), and every descriptor handed to
/// [`close_later`] is closed: before the daemon tears its tree down or
/// hands over to a new one.
pub fn drain() {
    let remover = remover();
    let mut removals = lock(&remover.removals);
    removals.draining += 1;
    remover.changed.notify_all();
    while removals.started
        && (!removals.queue.is_empty()
            || removals.removing.is_some()
            || !removals.closing.is_empty()
            || removals.closing_in_hand)
    {
        removals = remover
            .changed
            .wait(removals)
            .unwrap_or_else(PoisonError::into_inner);
    }
    removals.draining -= 1;
}

impl Removals {
    /// Nothing to do: the thread waits without a deadline.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.refused.is_empty() && self.closing.is_empty()
    }

    /// The next work to do now, or how long to wait for some.
    fn next(&mut self, now: Instant) -> Result<Work, Option<Duration>> {
        if let Some(index) = self.refused.iter().position(|r| r.due <= now) {
            return Ok(Work::Remove(self.refused.swap_remove(index)));
        }
        let settled = self.last_request.map_or(now, |last| last + QUIET);
        let closing_due = self
            .closing_since
            .map(|since| (since + MAX_DELAY).min(settled));
        if let Some(due) = closing_due {
            if self.draining > 0 || due <= now {
                self.closing_since = None;
                return Ok(Work::Close(std::mem::take(&mut self.closing)));
            }
        }
        let first_due = self.queue.front().map(|r| r.due.min(settled));
        match first_due {
            Some(due) if self.draining > 0 || due <= now => Ok(Work::Remove(
                self.queue.pop_front().expect("the queue has a front"),
            )),
            first_due => Err(first_due
                .into_iter()
                .chain(closing_due)
                .chain(self.refused.iter().map(|r| r.due))
                .min()
                .map(|due| due.saturating_duration_since(now))),
        }
    }
}

impl Remover {
    fn run(&self) {
        // SAFETY: setpriority on this thread's own id only changes its nice
        // value.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, NICENESS);
        }
        let mut removals = lock(&self.removals);
        loop {
            let now = Instant::now();
            let mut request = match removals.next(now) {
                Ok(Work::Remove(request)) => request,
                Ok(Work::Close(files)) => {
                    removals.closing_in_hand = true;
                    drop(removals);
                    drop(files);
                    removals = lock(&self.removals);
                    removals.closing_in_hand = false;
                    self.changed.notify_all();
                    continue;
                }
                Err(wait) => {
                    removals = match wait {
                        Some(wait) => {
                            self.changed
                                .wait_timeout(removals, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                        None => self
                            .changed
                            .wait(removals)
                            .unwrap_or_else(PoisonError::into_inner),
                    };
                    continue;
                }
            };
            if removals.current.get(&request.dir) != Some(&request.generation) {
                // Created again meanwhile: it has a new owner. (`drain` may
                // be waiting for the queue to empty.)
                self.changed.notify_all();
                continue;
            }
            // Outside the lock: a stop asking for a removal never waits for
            // the kernel's cgroup lock. Whoever wants this directory waits
            // (see `not_removing`).
            removals.removing = Some(request.dir.clone());
            drop(removals);
            let result = remove_dir(&request.dir);
            removals = lock(&self.removals);
            removals.removing = None;
            match result {
                Ok(()) => {
                    removals.current.swap_remove(&request.dir);
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && request.tries < MAX_TRIES => {
                    request.tries += 1;
                    request.due = now + RETRY_AFTER;
                    removals.refused.push(request);
                }
                Err(e) => {
                    tracing::warn!(cgroup = %request.dir.display(), "cannot remove an empty cgroup: {e}");
                    removals.current.swap_remove(&request.dir);
                }
            }
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(dir: &Path) -> Option<u64> {
        lock(&remover().removals).current.get(dir).copied()
    }

    #[test]
    fn a_removal_asked_for_is_done_and_forgotten() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("web.service");
        // Made relative to the open parent, as a config's services are.
        let parent: OwnedFd = std::fs::File::open(top.path()).unwrap().into();
        let generation = create(&dir, Some(&parent)).unwrap();
        assert!(dir.is_dir());
        remove_later(&dir, generation);
        drain();
        assert!(!dir.exists());
        assert_eq!(tracked(&dir), None, "nothing is kept for a removed cgroup");
    }

    #[test]
    fn a_cgroup_created_again_is_never_removed_by_its_old_owner() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("web.service");
        let old = create(&dir, None).unwrap();
        remove_later(&dir, old);
        // A restart wants it again before (or after) the thread got to it.
        let new = create(&dir, None).unwrap();
        assert!(new > old);
        drain();
        assert!(dir.is_dir(), "the new owner's cgroup was removed");
        // A late request of the old owner changes nothing either.
        remove_later(&dir, old);
        drain();
        assert!(dir.is_dir());
        assert_eq!(tracked(&dir), Some(new));
        remove_later(&dir, new);
        drain();
        assert!(!dir.exists());
    }

    #[test]
    fn a_cgroup_that_cannot_be_removed_is_left_and_forgotten() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("busy.service");
        let generation = create(&dir, None).unwrap();
        std::fs::write(dir.join("in-use"), "").unwrap();
        remove_later(&dir, generation);
        drain();
        assert!(dir.is_dir());
        assert_eq!(tracked(&dir), None);
    }

    #[test]
    fn descriptors_handed_over_are_closed_by_the_thread() {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let mut writer = File::from(writer);
        close_later(File::from(reader));
        drain();
        // With its only reader closed, the pipe refuses writes.
        let written = std::io::Write::write(&mut writer, b"x");
        assert_eq!(
            written.map_err(|e| e.kind()),
            Err(io::ErrorKind::BrokenPipe)
        );
    }

    #[test]
    fn removing_now_forgets_the_owner() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("hook-1.hook");
        create(&dir, None).unwrap();
        remove_now(&dir).unwrap();
        assert!(!dir.exists());
        assert_eq!(tracked(&dir), None);
        // Gone already is fine.
        remove_now(&dir).unwrap();
    }
}
