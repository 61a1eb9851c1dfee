//! Starting a child without copying the daemon's address space.
//!
//! A plain `fork` copies the parent's page tables, and the daemon's grow with
//! its services: with a thousand running, each fork cost milliseconds, so
//! starting them was quadratic. Like `posix_spawn`, this uses
//! `clone(CLONE_VM | CLONE_VFORK)`: the child borrows the daemon's memory on
//! a small stack of its own, sets itself up with raw system calls only, and
//! calls `execve`; the calling thread sleeps until then.
//!
//! Rules for the child, which shares every page with the running daemon:
//! no allocation, no locks, no glibc wrappers that talk to other threads
//! (glibc's `setuid` family signals all of the process's threads, which in
//! the child would be the daemon's), and every signal handler reset to
//! default before any signal is unblocked.
//!
//! A child with a cgroup of its own is cloned straight into it with
//! `clone3(CLONE_INTO_CGROUP)`, so the kernel places it as part of the fork.
//! Joining by a write to `cgroup.procs` instead migrates a running process,
//! which takes the kernel's process-wide cgroup lock for writing on every
//! spawn; that path remains for kernels (or seccomp filters) without
//! `clone3`, and for architectures this file has no entry code for.
//!
//! The child does not get a copy of the daemon's descriptor table either.
//! Copying it costs a reference per open descriptor, and the daemon holds
//! a log file open per stream of every service that writes: spawn by
//! spawn, a large start grew quadratic again. So the child is cloned
//! sharing the table
//! (`CLONE_FILES`) and its first call, `close_range` with
//! `CLOSE_RANGE_UNSHARE`, takes a private copy of only the low descriptors
//! it needs, below those the daemon keeps for as long as services run
//! (see [`super::descriptors::keep_high`]). A kernel without that (before
//! 5.9) makes the child fail at once, before it has touched the table, and
//! spawns go back to copying the whole table.
//!
//! A bare program name is looked up here, in the child, after it has become
//! the service's user: each directory of the search path is tried with
//! `execve` as `execvp` does, so the daemon's root rights never tell a
//! service whether a file exists in a directory its user cannot read.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::child::{cgroup_failure, join_cgroup, search_failed, ChildSetup};

/// Stack for the child until it calls `execve`; it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child needs, prepared by the parent.
pub(super) struct Launch<'a> {
    /// Paths to `execve`, in order; the first that runs wins.
    pub programs: Vec<CString>,
    /// Whether `programs` are the candidates of a search path (a miss moves
    /// on to the next) rather than one given path.
    pub search: bool,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub setup: &'a ChildSetup,
    pub stdin: &'a OwnedFd,
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
    /// The directory of the cgroup the child starts in, if any.
    pub cgroup: Option<BorrowedFd<'a>>,
}

struct ChildContext {
    /// Null-terminated.
    programs: *const *const libc::c_char,
    search: bool,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    setup: *const ChildSetup,
    fds: [libc::c_int; 3],
    /// The cgroup directory whose `cgroup.procs` the child writes itself
    /// into; -1 without a cgroup to join (or when cloned into it).
    join_cgroup: libc::c_int,
    /// With the daemon's descriptor table shared: the child's first act
    /// is to keep a copy of the descriptors below this one only. -1 when
    /// the child was given a copy of the whole table.
    unshare_from: libc::c_int,
    /// The end of that range: everything above. (Only a test sets less, to
    /// make the kernel refuse.)
    unshare_to: libc::c_uint,
    /// Set by a child whose kernel could not unshare the table; it has
    /// exited without touching anything.
    unshare_failed: AtomicBool,
    /// 0 while the child is on its way to `execve`; its error code if not.
    error: AtomicI32,
}

/// Cleared once a kernel could not unshare a shared descriptor table:
/// every later child gets a copy of the whole table.
static SHARE_TABLE: AtomicBool = AtomicBool::new(true);

/// Set by [`refuse_unsharing_descriptor_tables`].
static REFUSE_UNSHARE: AtomicBool = AtomicBool::new(false);

/// Makes the next children of this process fail to unshare the descriptor
/// table, as on a kernel without `CLOSE_RANGE_UNSHARE`: for tests of the
/// way back to copying the whole table.
#[doc(hidden)]
pub fn refuse_unsharing_descriptor_tables() {
    REFUSE_UNSHARE.store(true, Ordering::Relaxed);
}

/// Whether children still share the table until they unshare it (false
/// once a kernel refused): for tests.
#[doc(hidden)]
pub fn children_share_descriptor_tables() -> bool {
    SHARE_TABLE.load(Ordering::Relaxed)
}

/// Starts the child and returns its pid once it has called `execve`, with
/// the error it reported if it could not (it has then exited with 127).
pub(super) fn launch(launch: &Launch) -> io::Result<(i32, Option<io::Error>)> {
    if SHARE_TABLE.load(Ordering::Relaxed) {
        match launch_once(launch, true)? {
            Launched::Child(pid, error) => return Ok((pid, error)),
            Launched::CannotUnshare => {
                // That child exited at once; the reaper collects it.
                SHARE_TABLE.store(false, Ordering::Relaxed);
                tracing::info!(
                    "close_range(CLOSE_RANGE_UNSHARE) is not available (Linux 5.9); \
                     each spawn copies the daemon's whole descriptor table"
                );
            }
        }
    }
    match launch_once(launch, false)? {
        Launched::Child(pid, error) => Ok((pid, error)),
        // Only a child given a shared table reports this.
        Launched::CannotUnshare => Err(io::Error::other(
            "a spawn without a shared table failed to unshare it",
        )),
    }
}

enum Launched {
    /// The child's pid, and the error it reported if it could not exec.
    Child(i32, Option<io::Error>),
    /// The child could not take a private descriptor table and has exited.
    CannotUnshare,
}

fn launch_once(launch: &Launch, share_table: bool) -> io::Result<Launched> {
    let argv: Vec<*const libc::c_char> = launch
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = launch
        .envp
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect();
    let programs: Vec<*const libc::c_char> = launch
        .programs
        .iter()
        .map(|p| p.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect();
    let mut context = ChildContext {
        programs: programs.as_ptr(),
        search: launch.search,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        setup: launch.setup,
        fds: [
            launch.stdin.as_raw_fd(),
            launch.stdout.as_raw_fd(),
            launch.stderr.as_raw_fd(),
        ],
        join_cgroup: -1,
        unshare_from: -1,
        unshare_to: libc::c_uint::MAX,
        unshare_failed: AtomicBool::new(false),
        error: AtomicI32::new(0),
    };
    if share_table {
        // Everything the child uses: its three standard descriptors and
        // the cgroup it may join.
        let highest = context
            .fds
            .iter()
            .copied()
            .chain(launch.cgroup.map(|fd| fd.as_raw_fd()))
            .fold(2, libc::c_int::max);
        context.unshare_from = highest + 1;
        if REFUSE_UNSHARE.load(Ordering::Relaxed) {
            // An empty range: EINVAL.
            context.unshare_to = 0;
        }
    }
    let table = if share_table { libc::CLONE_FILES } else { 0 };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down; its top must be 16-byte aligned.
    let top = ((stack.as_mut_ptr() as usize + CHILD_STACK) & !15) as *mut libc::c_void;

    // The child starts with every signal blocked, so no daemon handler can
    // run on its stack before it has reset them all.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain signal-mask calls on valid sigset pointers.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // Straight into the cgroup where the kernel can: `None` to take the
    // `clone` path (no cgroup, or clone3 unavailable).
    let cloned_into = launch
        .cgroup
        .filter(|_| clone3::usable())
        .and_then(|cgroup| {
            // SAFETY: as for `clone` below.
            let pid = unsafe { clone3::into_cgroup(cgroup, &mut stack, &context, table) };
            if pid >= 0 {
                return Some(Ok(pid));
            }
            // Refused for the cgroup itself (removed meanwhile, say):
            // reported like a child that could not join it.
            let error = io::Error::last_os_error();
            (!clone3::unsupported(&error)).then(|| Err(cgroup_failure(error)))
        });
    let spawned = cloned_into.unwrap_or_else(|| {
        context.join_cgroup = launch.cgroup.map_or(-1, |fd| fd.as_raw_fd());
        // SAFETY: `child_main` runs on `stack`, which outlives the call
        // because CLONE_VFORK suspends this thread until the child has
        // exec'd or exited; `context` lives on this thread's stack for the
        // same span.
        let pid = unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | table | libc::SIGCHLD,
                &context as *const ChildContext as *mut libc::c_void,
            )
        };
        if pid < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(pid)
        }
    });
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, ptr::null_mut()) };
    drop(stack);
    let pid = spawned?;
    if context.unshare_failed.load(Ordering::Acquire) {
        return Ok(Launched::CannotUnshare);
    }
    let code = context.error.load(Ordering::Acquire);
    Ok(Launched::Child(
        pid,
        (code != 0).then(|| io::Error::from_raw_os_error(code)),
    ))
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildContext`, alive until we exec or exit.
    let context = unsafe { &*(arg as *const ChildContext) };
    let fail = |code: i32| -> libc::c_int {
        context.error.store(code, Ordering::Release);
        // SAFETY: leaves the child without running any daemon code.
        unsafe { libc::_exit(127) }
    };
    if context.unshare_from >= 0 {
        // First, while the table is still the daemon's: nothing below may
        // change it.
        // SAFETY: close_range only acts on this task's descriptor table.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                context.unshare_from as libc::c_uint,
                context.unshare_to,
                libc::CLOSE_RANGE_UNSHARE,
            )
        };
        if rc < 0 {
            context.unshare_failed.store(true, Ordering::Release);
            // SAFETY: leaves the child without running any daemon code.
            unsafe { libc::_exit(127) }
        }
    }
    if context.join_cgroup >= 0 {
        if let Err(e) = join_cgroup(context.join_cgroup) {
            return fail(e.raw_os_error().unwrap_or(libc::EIO));
        }
    }
    for (target, &fd) in context.fds.iter().enumerate() {
        // SAFETY: dup2 on descriptors the parent keeps open until we exec.
        if unsafe { libc::dup2(fd, target as libc::c_int) } < 0 {
            return fail(
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            );
        }
    }
    // SAFETY: the setup was prepared by the parent and only makes syscalls.
    if let Err(e) = unsafe { &*context.setup }.apply() {
        return fail(e.raw_os_error().unwrap_or(libc::EIO));
    }
    let mut denied = false;
    for index in 0.. {
        // SAFETY: a null-terminated array of C strings owned by the parent.
        let program = unsafe { *context.programs.add(index) };
        if program.is_null() {
            break;
        }
        // SAFETY: null-terminated arrays of C strings owned by the parent.
        unsafe { libc::execve(program, context.argv, context.envp) };
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if !context.search {
            return fail(errno);
        }
        match errno {
            // Not here (or not for this user): try the next directory.
            libc::EACCES => denied = true,
            libc::ENOENT
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::ENAMETOOLONG
            | libc::ESTALE
            | libc::ENODEV
            | libc::ETIMEDOUT => {}
            // Found, but it cannot run: that is the answer.
            _ => return fail(errno),
        }
    }
    fail(search_failed(denied))
}

/// Makes every later spawn of this process join its cgroup by writing
/// `cgroup.procs` from the child, as on a kernel without `clone3`: for
/// tests of that path.
#[doc(hidden)]
pub fn join_cgroups_through_procs() {
    clone3::give_up();
}

/// `clone3` with `CLONE_INTO_CGROUP`, where this file can enter a child
/// started by a raw `clone3` (x86-64).
mod clone3 {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[cfg(target_arch = "x86_64")]
    use super::{child_main, ChildContext};
    #[cfg(target_arch = "x86_64")]
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// Cleared once the kernel turned `clone3` or `CLONE_INTO_CGROUP` down:
    /// every later spawn goes straight to the `cgroup.procs` path.
    static USABLE: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

    pub fn usable() -> bool {
        USABLE.load(Ordering::Relaxed)
    }

    pub fn give_up() {
        USABLE.store(false, Ordering::Relaxed);
    }

    /// Whether `error` from `clone3` means "not on this kernel": no
    /// `clone3` (before 5.3, or a seccomp filter's ENOSYS or EPERM), or no
    /// `CLONE_INTO_CGROUP` (before 5.7: unknown flag or larger arguments).
    /// Remembered, so the question is asked once.
    pub fn unsupported(error: &io::Error) -> bool {
        let unsupported = matches!(
            error.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EPERM)
        );
        if unsupported {
            give_up();
            tracing::debug!(
                "clone3 into a cgroup is not available ({error}); joining through cgroup.procs"
            );
        }
        unsupported
    }

    /// The kernel's `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[cfg(target_arch = "x86_64")]
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }

    #[cfg(target_arch = "x86_64")]
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// Starts [`child_main`] on `stack` in a child that shares this
    /// process's memory, suspends the calling thread until the child has
    /// exec'd or exited (as `clone` does in [`super::launch`]), and puts
    /// the child in `cgroup` from its first instruction. Returns its pid,
    /// or -1 with errno set.
    ///
    /// # Safety
    ///
    /// `stack` and `context` must stay alive and untouched by anything else
    /// until this returns (CLONE_VFORK guarantees the child is done with
    /// them by then), and every signal must be blocked.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn into_cgroup(
        cgroup: BorrowedFd<'_>,
        stack: &mut [u8],
        context: &ChildContext,
        extra_flags: libc::c_int,
    ) -> libc::c_int {
        let base = stack.as_mut_ptr() as u64;
        // The kernel starts the child at base + size, which the ABI wants
        // 16-byte aligned.
        let size = ((base + stack.len() as u64) & !15) - base;
        let args = CloneArgs {
            flags: (libc::CLONE_VM | libc::CLONE_VFORK | extra_flags) as u64 | CLONE_INTO_CGROUP,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: base,
            stack_size: size,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: cgroup.as_raw_fd() as u64,
        };
        let entry: extern "C" fn(*mut libc::c_void) -> libc::c_int = child_main;
        let result: i64;
        // The child returns from the syscall on its new stack with rax = 0
        // and every other register as the parent had it: it calls the entry
        // (kept in r12, its argument in r13, both preserved by the kernel)
        // and never comes back into this function. The entry ends in execve
        // or _exit; the exit below only guards against a return.
        // SAFETY: the caller upholds the contract above; the parent resumes
        // here with only rax, rcx and r11 changed, as declared.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                "2:",
                exit = const libc::SYS_exit,
                inlateout("rax") libc::SYS_clone3 => result,
                in("rdi") &args as *const CloneArgs,
                in("rsi") std::mem::size_of::<CloneArgs>(),
                in("r12") entry,
                in("r13") context as *const ChildContext as *mut libc::c_void,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        if result < 0 {
            // The raw syscall returns -errno; make it errno as libc would.
            // SAFETY: writes this thread's errno.
            unsafe { *libc::__errno_location() = -result as libc::c_int };
            return -1;
        }
        result as libc::c_int
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub unsafe fn into_cgroup(
        _cgroup: std::os::fd::BorrowedFd<'_>,
        _stack: &mut [u8],
        _context: &super::ChildContext,
        _extra_flags: libc::c_int,
    ) -> libc::c_int {
        // SAFETY: writes this thread's errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        -1
    }
}
