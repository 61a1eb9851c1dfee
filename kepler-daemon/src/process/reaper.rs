//! The one place the daemon reaps children, and the events reaping produces:
//! "this leader exited" ([`ExitWaiter`]) and "this process group is gone"
//! ([`wait_group_gone`]).
//!
//! A single dedicated OS thread (not a tokio task, so it serves every
//! runtime, tests included) blocks in `waitid(P_ALL)`. Because the daemon is a
//! child subreaper, orphaned grandchildren are reparented to it and reaped
//! here too, so no zombie is ever left behind. **Every child of the daemon
//! process must be spawned through this module**: a `waitpid(-1)` reaper
//! steals any other code's children (`std::process::Command::output`,
//! `tokio::process`), and setting SIGCHLD to SIG_IGN would disable it.
//!
//! Dispatch is O(1) per reaped pid: its exit waiter is a hash-map lookup, and
//! only the watchers of *its* process group are woken (the group is read from
//! the zombie before it is reaped). A watcher then checks `kill(-pgid, 0)`,
//! which fails with ESRCH only once every member, zombies included, has been
//! reaped.
//!
//! std's `Command::spawn` itself waits for a child whose `exec` failed; were
//! this thread to reap that child first, std would panic. So spawns hold
//! the reaper's `spawning` lock shared from fork until their exit waiter is
//! registered, and this thread only peeks (`WNOWAIT`) without it, taking it
//! exclusively for the actual `waitpid`. That also means a pid can never be
//! reaped before its waiter exists: no "unclaimed status" bookkeeping.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::sync::{oneshot, Notify};

use super::signal::signal_name;

/// How a leader process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code when it exited on its own.
    pub code: Option<i32>,
    /// Signal number when a signal killed it (realtime signals included).
    pub signal: Option<i32>,
}

impl ExitStatus {
    fn from_wait_status(status: libc::c_int) -> ExitStatus {
        if libc::WIFEXITED(status) {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ExitStatus {
                code: None,
                signal: None,
            }
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "killed by {}", signal_name(signal)),
            (None, None) => write!(f, "ended with an unknown status"),
        }
    }
}

/// Resolves to the leader's [`ExitStatus`] once the reaper has reaped it.
/// Other members of its group may still be running then; see
/// [`super::reap_leftovers`].
#[derive(Debug)]
pub struct ExitWaiter {
    pid: i32,
    status: oneshot::Receiver<ExitStatus>,
}

impl ExitWaiter {
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl Future for ExitWaiter {
    type Output = ExitStatus;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ExitStatus> {
        Pin::new(&mut self.status).poll(cx).map(|result| {
            result.unwrap_or_else(|_| {
                // Only possible if the reaper thread died mid-dispatch.
                tracing::error!(pid = self.pid, "exit status of process was lost");
                ExitStatus {
                    code: None,
                    signal: None,
                }
            })
        })
    }
}

/// Resolves when no process of group `pgid` is left (all reaped).
///
/// Woken by the reaper whenever a member of the group is reaped. The one
/// death the daemon cannot see is a member reaped by another member's
/// process (e.g. a job-control shell's child moved to its own group); a slow
/// backstop re-check covers it, costing one syscall per second per waiter.
pub async fn wait_group_gone(pgid: i32) {
    const BACKSTOP: Duration = Duration::from_secs(1);
    if pgid <= 1 {
        // kill(-1) / kill(0) mean "everything" / "ourselves": never a service.
        tracing::error!(pgid, "wait_group_gone called with an invalid process group");
        return;
    }
    let watch = reaper().ok().map(|reaper| reaper.watch_group(pgid));
    loop {
        let notified = watch.as_ref().map(|watch| watch.notify.notified());
        let mut notified = std::pin::pin!(notified);
        // Register before checking so a reap in between is not missed.
        if let Some(notified) = notified.as_mut().as_pin_mut() {
            notified.enable();
        }
        if group_is_gone(pgid) {
            return;
        }
        match notified.as_pin_mut() {
            Some(notified) => {
                let _ = tokio::time::timeout(BACKSTOP, notified).await;
            }
            None => tokio::time::sleep(BACKSTOP).await,
        }
    }
}

/// True once no process (zombies included) is left in group `pgid`.
pub(super) fn group_is_gone(pgid: i32) -> bool {
    kill(Pid::from_raw(-pgid), None) == Err(Errno::ESRCH)
}

/// Makes the daemon a child subreaper: orphans of its services are
/// reparented to it instead of init, so they can be reaped and their group's
/// watchers told. The daemon calls this once at start.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) struct Reaper {
    /// Shared by spawns (fork .. waiter registered), exclusive around each
    /// `waitpid`; see the module docs.
    spawning: RwLock<()>,
    registry: Mutex<Registry>,
    /// Counts spawns so the idle reaper (no children: ECHILD) can sleep until
    /// the next one without missing it.
    spawned: Mutex<u64>,
    spawned_changed: Condvar,
    /// Set during an upgrade's hand-over: exits stay zombies, so the new
    /// daemon (same pid, same children) reaps them and hears their status.
    paused: Mutex<bool>,
    unpaused: Condvar,
}

/// Exit waiters of children adopted before the reaper thread existed,
/// taken into its registry before its first `waitid`.
static ADOPTED: Mutex<Vec<(i32, oneshot::Sender<ExitStatus>)>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Registry {
    exits: HashMap<i32, oneshot::Sender<ExitStatus>>,
    groups: HashMap<i32, GroupEntry>,
}

struct GroupEntry {
    notify: Arc<Notify>,
    watchers: usize,
}

static REAPER: OnceLock<Result<&'static Reaper, String>> = OnceLock::new();

/// Waiters for children this process did not spawn but inherited through
/// `execve` (a daemon resuming after an upgrade): they are still its
/// children, so the reaper collects them like any other. Call before
/// anything is spawned; a pid that is no longer a child (reaped by the
/// previous program) gets `None`.
pub fn adopt_children(pids: &[i32]) -> Vec<Option<ExitWaiter>> {
    pids.iter()
        .map(|&pid| {
            let (sender, status) = oneshot::channel();
            match REAPER.get() {
                Some(Ok(reaper)) => {
                    let _spawning = reaper
                        .spawning
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    lock(&reaper.registry).exits.insert(pid, sender);
                }
                _ => lock(&ADOPTED).push((pid, sender)),
            }
            is_child(pid).then_some(ExitWaiter { pid, status })
        })
        .collect()
}

/// Whether `pid` is a child of this process (alive or a zombie).
fn is_child(pid: i32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it on success.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG | libc::__WALL,
        )
    };
    rc == 0
}

/// Whether every pid is still a child of this process: none was reaped yet.
pub fn all_children(pids: &[i32]) -> bool {
    pids.iter().all(|&pid| is_child(pid))
}

/// Starts the reaper thread now (after [`adopt_children`]), so adopted
/// children that already exited are reaped without waiting for a spawn.
pub fn start_reaping() -> io::Result<()> {
    let reaper = reaper()?;
    *lock(&reaper.spawned) += 1;
    reaper.spawned_changed.notify_one();
    Ok(())
}

/// Stops reaping until the process image is replaced (an upgrade's
/// hand-over) or [`resume_reaping`] is called: children that exit
/// meanwhile stay zombies for whoever reaps next.
pub fn pause_reaping() {
    if let Some(Ok(reaper)) = REAPER.get() {
        *lock(&reaper.paused) = true;
    }
}

/// Undoes [`pause_reaping`] (a hand-over that was given up).
pub fn resume_reaping() {
    if let Some(Ok(reaper)) = REAPER.get() {
        *lock(&reaper.paused) = false;
        reaper.unpaused.notify_all();
    }
}

/// The process-wide reaper, started on first use.
pub(super) fn reaper() -> io::Result<&'static Reaper> {
    let started = REAPER.get_or_init(|| {
        let mut registry = Registry::default();
        registry.exits.extend(lock(&ADOPTED).drain(..));
        let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
            spawning: RwLock::new(()),
            registry: Mutex::new(registry),
            spawned: Mutex::new(0),
            spawned_changed: Condvar::new(),
            paused: Mutex::new(false),
            unpaused: Condvar::new(),
        }));
        thread::Builder::new()
            .name("kepler-reaper".into())
            .spawn(move || reaper.run())
            .map(|_| reaper)
            .map_err(|err| format!("cannot start the reaper thread: {err}"))
    });
    started.clone().map_err(io::Error::other)
}

/// Locks ignoring poison: the registry stays consistent across a panic
/// because every critical section is a single map operation.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reaper {
    /// Runs a launcher that returns a new child's pid with a result of its
    /// own, and registers the pid before any reap can happen (the reaper
    /// takes `spawning` exclusively around each reap). The pid is registered
    /// even if the result says the exec failed: the child then exits and is
    /// reaped here like any other.
    pub fn track_pid<T>(
        &self,
        launch: impl FnOnce() -> io::Result<(i32, T)>,
    ) -> io::Result<(T, ExitWaiter)> {
        let tracked = {
            let _spawning = self.spawning.read().unwrap_or_else(PoisonError::into_inner);
            let (pid, result) = launch()?;
            let (sender, status) = oneshot::channel();
            lock(&self.registry).exits.insert(pid, sender);
            (result, ExitWaiter { pid, status })
        };
        *lock(&self.spawned) += 1;
        self.spawned_changed.notify_one();
        Ok(tracked)
    }

    fn watch_group(&'static self, pgid: i32) -> GroupWatch {
        let mut registry = lock(&self.registry);
        let entry = registry.groups.entry(pgid).or_insert_with(|| GroupEntry {
            notify: Arc::new(Notify::new()),
            watchers: 0,
        });
        entry.watchers += 1;
        GroupWatch {
            reaper: self,
            pgid,
            notify: Arc::clone(&entry.notify),
        }
    }

    fn run(&self) {
        block_all_signals_in_this_thread();
        loop {
            let spawned_before = *lock(&self.spawned);
            match wait_for_exited_child() {
                Ok(pid) => {
                    self.wait_while_paused();
                    if catch_unwind(AssertUnwindSafe(|| self.reap(pid))).is_err() {
                        tracing::error!(pid, "reaper recovered from a panic while reaping");
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => self.wait_for_spawn(spawned_before),
                Err(errno) => {
                    // Not expected from waitid; back off instead of spinning.
                    tracing::error!(%errno, "reaper: waitid failed");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn wait_while_paused(&self) {
        let mut paused = lock(&self.paused);
        while *paused {
            paused = self
                .unpaused
                .wait(paused)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn wait_for_spawn(&self, spawned_before: u64) {
        let mut spawned = lock(&self.spawned);
        while *spawned == spawned_before {
            spawned = self
                .spawned_changed
                .wait(spawned)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn reap(&self, pid: i32) {
        let (pgid, status) = {
            let _exclusive = self
                .spawning
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // A zombie still belongs to its group; once reaped it cannot be
            // asked any more.
            // SAFETY: getpgid takes an integer and touches no memory.
            let pgid = unsafe { libc::getpgid(pid) };
            let mut raw_status: libc::c_int = 0;
            // SAFETY: `raw_status` is a valid out-pointer for the call.
            let reaped =
                unsafe { libc::waitpid(pid, &mut raw_status, libc::WNOHANG | libc::__WALL) };
            if reaped != pid {
                // std reaped it itself: a spawn whose exec failed.
                return;
            }
            (
                (pgid > 0).then_some(pgid),
                ExitStatus::from_wait_status(raw_status),
            )
        };
        let mut registry = lock(&self.registry);
        if let Some(waiter) = registry.exits.remove(&pid) {
            let _ = waiter.send(status);
        }
        match pgid {
            Some(pgid) => {
                if let Some(group) = registry.groups.get(&pgid) {
                    group.notify.notify_waiters();
                }
            }
            // Cannot happen for a zombie we own; wake everyone to be safe.
            None => registry
                .groups
                .values()
                .for_each(|group| group.notify.notify_waiters()),
        }
    }
}

/// One `wait_group_gone` caller's interest in a group; the registry entry
/// goes away with the last watcher.
struct GroupWatch {
    reaper: &'static Reaper,
    pgid: i32,
    notify: Arc<Notify>,
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        let mut registry = lock(&self.reaper.registry);
        if let Some(entry) = registry.groups.get_mut(&self.pgid) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                registry.groups.remove(&self.pgid);
            }
        }
    }
}

/// Blocks until some child has exited and returns its pid without reaping
/// it (`WNOWAIT`).
fn wait_for_exited_child() -> Result<i32, Errno> {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it on success.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer; P_ALL ignores the id.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::__WALL,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: waitid succeeded for WEXITED, so si_pid is the field in use.
    Ok(unsafe { info.si_pid() })
}

/// Signals for the daemon are handled on other threads; this one must only
/// ever sit in `waitid`.
fn block_all_signals_in_this_thread() {
    // SAFETY: the set is initialised by sigfillset before use.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}
