//! Output pipes held by io_uring instead of the descriptor table.
//!
//! Each running service has two pipes whose read ends the daemon keeps.
//! As descriptors they would count against the daemon's `RLIMIT_NOFILE`, so
//! a daemon whose limit cannot be raised (no `CAP_SYS_RESOURCE`) could run
//! about half its limit in services; and every spawn copies the descriptor
//! table into the child and closes it again at `exec`, so a spawn would
//! cost in proportion to the services already running. An io_uring
//! instance keeps files in a table of its own ("fixed files"): a read end
//! registered there and then closed as a descriptor costs neither.
//!
//! The log thread does all the ring work, so completions (which the kernel
//! runs as task work of the submitting thread) land there. Each held pipe
//! has one multishot poll; a completion marks its slot ready and wakes its
//! pump. Reads are `RWF_NOWAIT`, so they complete during the submitting
//! call and the pump reads inline as it would with `read(2)`. A ring holds
//! at most `RLIMIT_NOFILE` files, so there are as many rings as needed,
//! each one descriptor. Where io_uring is unavailable (old kernel,
//! `io_uring_disabled`, a seccomp filter), [`hold`] gives the descriptor
//! back and pumps read it directly, as before.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

/// Slots of one ring (bounded by `RLIMIT_NOFILE` too). Modest, because
/// cancelling a poll walks one bucket of the ring's table of polls, which
/// has at most 256 buckets: at eight polls a bucket, a close costs the same
/// with 1,000 services as with 10,000.
const SLOTS_PER_RING: u32 = 2048;
/// Submissions queued at once; the queue is submitted whenever it fills.
const SUBMISSION_ENTRIES: u32 = 256;
/// Completions the ring holds before the kernel buffers them aside (they
/// are not lost: `IORING_FEAT_NODROP`). The kernel sizes the table of polls
/// from it too (one bucket per 32 entries, at most 256): 8192 gives the 256.
const COMPLETION_ENTRIES: u32 = 8192;

/// `user_data` of a poll: generation (30 bits) << 32 | slot. Reads,
/// installs and cancels are told apart by the top bits.
const INLINE_TAG: u64 = 1 << 63;
const CANCEL_TAG: u64 = 1 << 62;
const GENERATION_MASK: u32 = (1 << 30) - 1;

/// A pipe's read end, held in a ring's file table.
pub struct HeldPipe {
    ring: Arc<Ring>,
    slot: u32,
    generation: u32,
}

/// Hands `fd` (a pipe's read end) to a ring; gives it back when no ring
/// can take it. `runtime` is the log thread's, where the pipe is read and
/// the rings' completions are reaped.
pub fn hold(fd: OwnedFd, runtime: &Handle) -> Result<HeldPipe, OwnedFd> {
    let Some(rings) = rings() else {
        return Err(fd);
    };
    rings.hold(fd, runtime)
}

/// Whether output pipes are held by io_uring ([`hold`] would take them),
/// and if not, why; for the daemon's status and start-up log.
pub fn availability() -> Result<(), String> {
    match RINGS.get_or_init(Rings::new) {
        Ok(_) => Ok(()),
        Err(why) => Err(why.clone()),
    }
}

/// How many pipes the rings hold now.
pub fn count() -> u64 {
    let Some(Ok(rings)) = RINGS.get() else {
        return 0;
    };
    lock(&rings.all)
        .iter()
        .map(|ring| {
            let state = lock(&ring.state);
            u64::from(state.next) - state.free.len() as u64
        })
        .sum()
}

static RINGS: OnceLock<Result<Rings, String>> = OnceLock::new();

fn rings() -> Option<&'static Rings> {
    RINGS.get_or_init(Rings::new).as_ref().ok()
}

/// Every ring, each with free slots or full.
struct Rings {
    all: Mutex<Vec<Arc<Ring>>>,
}

impl Rings {
    /// Checks that a ring can be made (the first one is kept).
    fn new() -> Result<Rings, String> {
        if std::env::var_os("KEPLER_IO_URING").is_some_and(|v| v == "off") {
            return Err("turned off with KEPLER_IO_URING=off".into());
        }
        let first = Ring::new().map_err(|e| format!("no io_uring ({e})"))?;
        self_test(&first).map_err(|e| format!("io_uring cannot hold pipes here ({e})"))?;
        Ok(Rings {
            all: Mutex::new(vec![first]),
        })
    }

    fn hold(&self, fd: OwnedFd, runtime: &Handle) -> Result<HeldPipe, OwnedFd> {
        let mut all = lock(&self.all);
        for ring in all.iter() {
            if let Some((slot, generation)) = ring.take_slot(&fd, runtime) {
                return Ok(HeldPipe {
                    ring: ring.clone(),
                    slot,
                    generation,
                });
            }
        }
        // Every ring is full: one more, if the kernel lets us.
        let ring = match Ring::new() {
            Ok(ring) => ring,
            Err(e) => {
                tracing::warn!("cannot make another io_uring for output pipes: {e}");
                return Err(fd);
            }
        };
        let taken = ring.take_slot(&fd, runtime);
        all.push(ring.clone());
        match taken {
            Some((slot, generation)) => Ok(HeldPipe {
                ring,
                slot,
                generation,
            }),
            None => Err(fd),
        }
    }
}

/// One io_uring instance and its file table.
struct Ring {
    fd: RawFd,
    state: Mutex<RingState>,
    /// Its driver has been started on the log thread.
    driven: OnceLock<()>,
}

struct RingState {
    uring: IoUring,
    capacity: u32,
    /// Slots given back, reused first; then `next` onwards.
    free: Vec<u32>,
    next: u32,
    slots: Vec<Slot>,
    /// The completion of the last inline operation (read, install).
    inline: Option<(u64, i32)>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    /// A poll completed since the last read that found nothing.
    ready: bool,
    /// A multishot poll is in flight.
    armed: bool,
    waker: Option<Waker>,
}

impl Ring {
    fn new() -> io::Result<Arc<Ring>> {
        let uring: IoUring = IoUring::builder()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(SUBMISSION_ENTRIES)?;
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let capacity = SLOTS_PER_RING.min(u32::try_from(limit).unwrap_or(u32::MAX));
        uring.submitter().register_files_sparse(capacity)?;
        // Everything a pump needs; probing spares a confusing failure later.
        let mut probe = io_uring::Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        for code in [
            opcode::PollAdd::CODE,
            opcode::Read::CODE,
            opcode::AsyncCancel::CODE,
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::other(format!(
                    "the kernel's io_uring lacks operation {code}"
                )));
            }
        }
        Ok(Arc::new(Ring {
            fd: uring.as_raw_fd(),
            state: Mutex::new(RingState {
                uring,
                capacity,
                free: Vec::new(),
                next: 0,
                slots: Vec::new(),
                inline: None,
            }),
            driven: OnceLock::new(),
        }))
    }

    /// Registers `fd` in a free slot (the caller then closes it as a
    /// descriptor), with completions reaped on `runtime`.
    fn take_slot(self: &Arc<Self>, fd: &OwnedFd, runtime: &Handle) -> Option<(u32, u32)> {
        let taken = self.register(fd)?;
        self.drive(runtime);
        Some(taken)
    }

    fn register(&self, fd: &OwnedFd) -> Option<(u32, u32)> {
        let mut state = lock(&self.state);
        let slot = match state.free.pop() {
            Some(slot) => slot,
            None if state.next < state.capacity => {
                state.next += 1;
                state.slots.push(Slot::default());
                state.next - 1
            }
            None => return None,
        };
        if let Err(e) = state
            .uring
            .submitter()
            .register_files_update(slot, &[fd.as_raw_fd()])
        {
            tracing::warn!("cannot hand an output pipe to io_uring: {e}");
            state.free.push(slot);
            return None;
        }
        let entry = &mut state.slots[slot as usize];
        entry.generation = (entry.generation + 1) & GENERATION_MASK;
        entry.ready = false;
        entry.armed = false;
        entry.waker = None;
        Some((slot, entry.generation))
    }

    /// Starts reaping this ring's completions on `runtime`, once.
    fn drive(self: &Arc<Self>, runtime: &Handle) {
        self.driven.get_or_init(|| {
            let ring = self.clone();
            runtime.spawn(async move {
                // SAFETY: `Completions` holds the ring, so its descriptor
                // stays open and the same for the AsyncFd's whole life.
                let registered = unsafe {
                    AsyncFd::register_with_interest(Completions(ring.clone()), Interest::READABLE)
                };
                let watched = match registered {
                    Ok(watched) => watched,
                    Err(e) => {
                        tracing::error!("cannot watch an io_uring for completions: {e}");
                        return;
                    }
                };
                loop {
                    let Ok(mut ready) = watched.readable().await else {
                        return;
                    };
                    // Cleared before reaping: a completion posted meanwhile
                    // signals the descriptor again.
                    ready.clear_ready();
                    lock(&watched.get_ref().0.state).reap();
                }
            });
        });
    }
}

/// A ring's descriptor, readable while completions wait.
struct Completions(Arc<Ring>);

impl AsRawFd for Completions {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd
    }
}

impl RingState {
    /// Queues `entry`, submitting first if the queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry queued here points at no memory (polls,
            // cancels, installs) or at a buffer that outlives its inline
            // completion (reads, see `run_inline`).
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
    }

    /// Takes every completion: polls mark their slot ready and wake its
    /// pump; an inline operation's result is kept for its caller.
    fn reap(&mut self) {
        loop {
            let RingState {
                uring,
                slots,
                inline,
                ..
            } = self;
            for cqe in uring.completion() {
                let data = cqe.user_data();
                if data & CANCEL_TAG != 0 {
                    continue;
                }
                if data & INLINE_TAG != 0 {
                    *inline = Some((data, cqe.result()));
                    continue;
                }
                let slot = (data & u64::from(u32::MAX)) as usize;
                let generation = (data >> 32) as u32 & GENERATION_MASK;
                let Some(entry) = slots.get_mut(slot) else {
                    continue;
                };
                if entry.generation != generation {
                    continue;
                }
                if !cqueue::more(cqe.flags()) {
                    entry.armed = false;
                }
                // Data, end of file, an error or a cancelled poll: the pump
                // looks, and re-arms if it finds nothing.
                entry.ready = true;
                if let Some(waker) = entry.waker.take() {
                    waker.wake();
                }
            }
            // Completions the kernel had to buffer come in with a submit.
            if !self.uring.submission().cq_overflow() {
                return;
            }
            if let Err(e) = self.uring.submit() {
                tracing::warn!("cannot flush io_uring completions: {e}");
                return;
            }
        }
    }

    /// Submits `entry` (tagged `tag`), which completes during the submit,
    /// and returns its result.
    fn run_inline(&mut self, entry: squeue::Entry, tag: u64) -> io::Result<i32> {
        let tag = tag | INLINE_TAG;
        self.inline = None;
        self.push(&entry.user_data(tag))?;
        self.uring.submit()?;
        loop {
            self.reap();
            if let Some((data, result)) = self.inline.take() {
                if data == tag {
                    return Ok(result);
                }
            }
            // Not expected (the operation cannot wait); wait rather than
            // leave a buffer the kernel may still write.
            self.uring.submit_and_wait(1)?;
        }
    }
}

impl HeldPipe {
    fn tag(&self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.slot)
    }

    fn fixed(&self) -> types::Fixed {
        types::Fixed(self.slot)
    }

    /// Ready once a poll saw the pipe readable (or hung up) since a read
    /// last found it empty.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.ring.state);
        let tag = self.tag();
        let slot = self.slot as usize;
        if !state.slots[slot].ready && !state.slots[slot].armed {
            let poll = opcode::PollAdd::new(self.fixed(), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(tag);
            if let Err(e) = state
                .push(&poll)
                .and_then(|()| state.uring.submit().map(drop))
            {
                return Poll::Ready(Err(e));
            }
            state.slots[slot].armed = true;
            // A pipe readable already completes the poll at once.
            state.reap();
        }
        let entry = &mut state.slots[slot];
        if entry.ready {
            return Poll::Ready(Ok(()));
        }
        entry.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Reads what the pipe holds into `buf`'s spare room, without waiting:
    /// `WouldBlock` when it is empty, 0 at end of file.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        let len = u32::try_from(spare.len()).unwrap_or(u32::MAX);
        let read = opcode::Read::new(self.fixed(), spare.as_mut_ptr().cast(), len)
            .rw_flags(libc::RWF_NOWAIT)
            .build();
        let mut state = lock(&self.ring.state);
        state.slots[self.slot as usize].ready = false;
        let result = state.run_inline(read, self.tag())?;
        if result < 0 {
            return Err(io::Error::from_raw_os_error(-result));
        }
        let n = result as usize;
        // SAFETY: the kernel wrote `n` bytes into the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        if n > 0 {
            // There may be more; the next read finds out.
            state.slots[self.slot as usize].ready = true;
        }
        Ok(n)
    }

    /// Sets the pipe's capacity (best effort: needs a descriptor for a
    /// moment, `IORING_OP_FIXED_FD_INSTALL`, Linux 6.8).
    pub fn set_capacity(&self, bytes: usize) {
        let install = opcode::FixedFdInstall::new(self.fixed(), 0).build();
        let fd = match lock(&self.ring.state).run_inline(install, self.tag()) {
            Ok(fd) if fd >= 0 => fd,
            _ => return,
        };
        // SAFETY: `fd` was just installed for us; fcntl takes integers.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int);
            libc::close(fd);
        }
    }
}

impl HeldPipe {
    /// Takes the pipe out of its ring as a descriptor again
    /// (`IORING_OP_FIXED_FD_INSTALL`), for a hand-over: an exec keeps
    /// descriptors but not io_uring instances. The slot is released.
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        let install = opcode::FixedFdInstall::new(self.fixed(), 0).build();
        let fd = lock(&self.ring.state).run_inline(install, self.tag())?;
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: the kernel just installed `fd` for us; nothing else owns it.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }
}

impl Drop for HeldPipe {
    fn drop(&mut self) {
        let mut state = lock(&self.ring.state);
        let slot = self.slot as usize;
        if state.slots[slot].armed {
            // The poll holds the file until it ends.
            let cancel = opcode::AsyncCancel::new(self.tag())
                .build()
                .user_data(CANCEL_TAG);
            if state
                .push(&cancel)
                .and_then(|()| state.uring.submit().map(drop))
                .is_err()
            {
                tracing::warn!("cannot cancel the poll of a closed output pipe");
            }
        }
        let entry = &mut state.slots[slot];
        entry.armed = false;
        entry.ready = false;
        entry.waker = None;
        // A later completion of the old poll carries the old generation.
        entry.generation = (entry.generation + 1) & GENERATION_MASK;
        if let Err(e) = state
            .uring
            .submitter()
            .register_files_update(self.slot, &[-1])
        {
            tracing::warn!("cannot release an output pipe from io_uring: {e}");
            return;
        }
        state.free.push(self.slot);
    }
}

/// Checks on a pipe of our own what pumps rely on: a multishot poll of a
/// fixed file that fires again after a read found the pipe empty, reads
/// that do not wait, and release. (Multishot polls need Linux 5.13; reads
/// of pipes that do not wait, 5.8.)
fn self_test(ring: &Arc<Ring>) -> io::Result<()> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (slot, generation) = ring
        .register(&read)
        .ok_or_else(|| io::Error::other("cannot register a pipe"))?;
    drop(read);
    let pipe = HeldPipe {
        ring: ring.clone(),
        slot,
        generation,
    };
    let mut context = Context::from_waker(Waker::noop());
    let wait_for_poll = || -> io::Result<()> {
        let timeout = types::Timespec::from(std::time::Duration::from_secs(2));
        let args = types::SubmitArgs::new().timespec(&timeout);
        let mut state = lock(&ring.state);
        if !state.slots[slot as usize].ready {
            match state.uring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => return Err(e),
            }
            state.reap();
        }
        if state.slots[slot as usize].ready {
            Ok(())
        } else {
            Err(io::Error::other("a poll did not complete"))
        }
    };
    let mut buf = Vec::with_capacity(16);
    for round in 0..2 {
        nix::unistd::write(&write, b"x")?;
        if pipe.poll_readable(&mut context).is_pending() {
            wait_for_poll()?;
        }
        buf.clear();
        if pipe.try_read_buf(&mut buf)? != 1 {
            return Err(io::Error::other("a read missed the data"));
        }
        match pipe.try_read_buf(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => {
                return Err(io::Error::other(format!(
                    "a read of an empty pipe (round {round}) gave {other:?}, not EAGAIN"
                )))
            }
        }
        if round == 0 && !lock(&ring.state).slots[slot as usize].armed {
            return Err(io::Error::other("polls are not multishot"));
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
