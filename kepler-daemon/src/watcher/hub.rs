//! The daemon's one inotify instance and the thread that owns it.
//!
//! Every watch of every config goes through this thread: it adds and
//! removes inotify watches (sharing one kernel watch between services that
//! watch the same directory), reads the events, hands each to the services
//! watching that directory, and sends each service's debounced changes to
//! its orchestrator. A single thread means one inotify instance for the
//! daemon (the kernel allows root only 128), one place to count watches
//! per user against their budget, and a thread whose file-access identity
//! can be switched to a service's user (see [`super::identity`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

use super::subscription::Subscription;

/// What the hub is asked to do.
pub(super) enum Command {
    /// Start watching; `ready` is told once the initial watches are set.
    Add {
        subscription: Box<Subscription>,
        ready: std_mpsc::SyncSender<()>,
    },
    /// Stop watching; `done` is told once its watches are released.
    Remove {
        id: u64,
        done: std_mpsc::SyncSender<()>,
    },
}

/// Why a directory could not be watched.
pub(super) enum AddFailure {
    /// The user already holds its budget of watches.
    OverBudget,
    /// The kernel's own limit (`fs.inotify.max_user_watches`) is reached.
    KernelLimit,
    Denied,
    /// Gone, or no longer a directory (it raced with the walk).
    Gone,
    Other(Errno),
}

/// The kernel side: the inotify instance, who holds each watch, and how
/// many watches each user holds.
pub(super) struct Watches {
    inotify: Inotify,
    budget: usize,
    held: HashMap<u32, usize>,
    holders: HashMap<WatchDescriptor, Vec<u64>>,
}

/// What is watched for in every directory.
fn event_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl Watches {
    /// Watches `dir` for subscription `id` of user `uid`. Called with the
    /// user's file-access identity in place: the kernel checks that the
    /// user may read the directory. `follow` is false for directories found
    /// by a walk, so a symlink swapped in is never followed.
    pub(super) fn add(
        &mut self,
        id: u64,
        uid: u32,
        dir: &std::path::Path,
        follow: bool,
    ) -> Result<WatchDescriptor, AddFailure> {
        if self.held.get(&uid).copied().unwrap_or(0) >= self.budget {
            return Err(AddFailure::OverBudget);
        }
        let mut mask = event_mask();
        if !follow {
            mask |= AddWatchFlags::IN_DONT_FOLLOW;
        }
        let wd = self.inotify.add_watch(dir, mask).map_err(|e| match e {
            Errno::ENOSPC => AddFailure::KernelLimit,
            Errno::EACCES | Errno::EPERM => AddFailure::Denied,
            Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => AddFailure::Gone,
            other => AddFailure::Other(other),
        })?;
        let holders = self.holders.entry(wd).or_default();
        if !holders.contains(&id) {
            holders.push(id);
            *self.held.entry(uid).or_default() += 1;
        }
        Ok(wd)
    }

    /// Lets go of one subscription's hold on `wd`; the kernel watch goes
    /// when nobody holds it.
    pub(super) fn release(&mut self, id: u64, uid: u32, wd: WatchDescriptor) {
        let Some(holders) = self.holders.get_mut(&wd) else {
            return;
        };
        let before = holders.len();
        holders.retain(|holder| *holder != id);
        if holders.len() == before {
            return;
        }
        if let Some(count) = self.held.get_mut(&uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.held.remove(&uid);
            }
        }
        if holders.is_empty() {
            self.holders.remove(&wd);
            // Fails only if the kernel already dropped it (directory gone).
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// The kernel dropped `wd` (its directory is gone): forget its holders.
    fn dropped(&mut self, wd: WatchDescriptor, uid_of: impl Fn(u64) -> Option<u32>) -> Vec<u64> {
        let holders = self.holders.remove(&wd).unwrap_or_default();
        for id in &holders {
            if let Some(count) = uid_of(*id).and_then(|uid| self.held.get_mut(&uid)) {
                *count = count.saturating_sub(1);
            }
        }
        self.held.retain(|_, count| *count > 0);
        holders
    }

    pub(super) fn budget(&self) -> usize {
        self.budget
    }
}

/// The hub thread's state.
pub(super) struct Hub {
    watches: Watches,
    subscriptions: HashMap<u64, Subscription>,
    commands: std_mpsc::Receiver<Command>,
    wake: Arc<EventFd>,
}

/// Starts the hub thread; returns where to send it commands and how to
/// wake it after sending one.
pub(super) fn start(budget: usize) -> io::Result<(std_mpsc::Sender<Command>, Arc<EventFd>)> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    let wake = Arc::new(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let (sender, commands) = std_mpsc::channel();
    let hub = Hub {
        watches: Watches {
            inotify,
            budget,
            held: HashMap::new(),
            holders: HashMap::new(),
        },
        subscriptions: HashMap::new(),
        commands,
        wake: wake.clone(),
    };
    std::thread::Builder::new()
        .name("kepler-watch".into())
        .spawn(move || hub.run())?;
    Ok((sender, wake))
}

impl Hub {
    fn run(mut self) {
        loop {
            let timeout = self.next_deadline().map_or(PollTimeout::NONE, |due| {
                let left = due.saturating_duration_since(Instant::now());
                // Rounded up, so a burst is never checked a little early.
                let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            });
            let (inotify_ready, woken) = {
                let mut fds = [
                    PollFd::new(self.watches.inotify.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!("file watcher: poll failed: {e}; file watching stops");
                        return;
                    }
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if woken {
                let _ = self.wake.read();
            }
            if !self.take_commands() {
                return;
            }
            if inotify_ready {
                self.read_events();
            }
            let now = Instant::now();
            for subscription in self.subscriptions.values_mut() {
                subscription.send_if_due(now);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.subscriptions
            .values()
            .filter_map(Subscription::due)
            .min()
    }

    /// Carries out queued commands; false once every sender is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add {
                    mut subscription,
                    ready,
                }) => {
                    subscription.set_up(&mut self.watches);
                    self.subscriptions.insert(subscription.id, *subscription);
                    let _ = ready.send(());
                }
                Ok(Command::Remove { id, done }) => {
                    if let Some(mut subscription) = self.subscriptions.remove(&id) {
                        subscription.release_all(&mut self.watches);
                    }
                    let _ = done.send(());
                }
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn read_events(&mut self) {
        loop {
            let events = match self.watches.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("file watcher: cannot read events: {e}");
                    return;
                }
            };
            for event in events {
                self.dispatch(event);
            }
        }
    }

    fn dispatch(&mut self, event: InotifyEvent) {
        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            tracing::warn!("file watcher missed events (queue overflow)");
            for subscription in self.subscriptions.values_mut() {
                subscription.missed_events();
            }
            return;
        }
        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
            let subscriptions = &self.subscriptions;
            let holders = self
                .watches
                .dropped(event.wd, |id| subscriptions.get(&id).map(|s| s.uid));
            for id in holders {
                if let Some(subscription) = self.subscriptions.get_mut(&id) {
                    subscription.lost(event.wd, &mut self.watches);
                }
            }
            return;
        }
        let Some(holders) = self.watches.holders.get(&event.wd).cloned() else {
            return;
        };
        for id in holders {
            if let Some(subscription) = self.subscriptions.get_mut(&id) {
                subscription.on_event(&event, &mut self.watches);
            }
        }
    }
}
