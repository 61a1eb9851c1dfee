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
//! A bare program name is looked up here, in the child, after it has become
//! the service's user: each directory of the search path is tried with
//! `execve` as `execvp` does, so the daemon's root rights never tell a
//! service whether a file exists in a directory its user cannot read.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use super::child::{join_cgroup, search_failed, ChildSetup};

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
    /// `cgroup.procs` of the cgroup the child joins first, if any.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
}

struct ChildContext {
    /// Null-terminated.
    programs: *const *const libc::c_char,
    search: bool,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    setup: *const ChildSetup,
    fds: [libc::c_int; 3],
    /// -1 without a cgroup to join.
    cgroup_procs: libc::c_int,
    /// 0 while the child is on its way to `execve`; its error code if not.
    error: AtomicI32,
}

/// Starts the child and returns its pid once it has called `execve`, with
/// the error it reported if it could not (it has then exited with 127).
pub(super) fn launch(launch: &Launch) -> io::Result<(i32, Option<io::Error>)> {
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
    let context = ChildContext {
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
        cgroup_procs: launch.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
        error: AtomicI32::new(0),
    };
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
    // SAFETY: `child_main` runs on `stack`, which outlives the call because
    // CLONE_VFORK suspends this thread until the child has exec'd or exited;
    // `context` lives on this thread's stack for the same span.
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &context as *const ChildContext as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    let code = context.error.load(Ordering::Acquire);
    Ok((pid, (code != 0).then(|| io::Error::from_raw_os_error(code))))
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildContext`, alive until we exec or exit.
    let context = unsafe { &*(arg as *const ChildContext) };
    let fail = |code: i32| -> libc::c_int {
        context.error.store(code, Ordering::Release);
        // SAFETY: leaves the child without running any daemon code.
        unsafe { libc::_exit(127) }
    };
    if context.cgroup_procs >= 0 {
        if let Err(e) = join_cgroup(context.cgroup_procs) {
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
