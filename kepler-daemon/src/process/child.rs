//! What a service's child does between its clone and `exec`.
//!
//! The child shares the daemon's memory (see `launch`), so it may only make
//! raw system calls: no allocation, no locks, no NSS lookups, no glibc
//! wrapper that talks to other threads. [`ChildSetup::prepare`] therefore
//! computes everything in the parent and [`ChildSetup::apply`] only issues
//! syscalls on that data.
//!
//! The launcher hands a failed step's errno back to the parent. To tell the
//! person *which* step failed (a limit, the user switch, `working_dir`), the
//! child tags the errno with its [`Stage`] and the parent decodes it with
//! [`decode_error`]; untagged errors come from `exec` itself.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use nix::sys::resource::{setrlimit, Resource};

use super::limits::{self, LimitKind, LimitSetting, ResourceLimits};
use super::priority;
use crate::user::ResolvedUser;

/// The step of child setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Setsid = 1,
    Limit = 2,
    Groups = 3,
    Gid = 4,
    Uid = 5,
    /// `setuid(0)` still worked after dropping to a non-root uid.
    RegainedRoot = 6,
    WorkingDir = 7,
    Signals = 8,
    /// No directory of the search path had a program the user may run;
    /// errno is `EACCES` if one was refused, else `ENOENT`.
    Search = 9,
    /// The daemon was already gone when a helper tied to it started.
    ParentDeath = 10,
    /// Joining the cgroup the parent chose.
    Cgroup = 11,
    /// Dropping back to the niceness services run at.
    Priority = 12,
}

impl Stage {
    fn from_code(code: i32) -> Option<Stage> {
        Some(match code {
            1 => Stage::Setsid,
            2 => Stage::Limit,
            3 => Stage::Groups,
            4 => Stage::Gid,
            5 => Stage::Uid,
            6 => Stage::RegainedRoot,
            7 => Stage::WorkingDir,
            8 => Stage::Signals,
            9 => Stage::Search,
            10 => Stage::ParentDeath,
            11 => Stage::Cgroup,
            12 => Stage::Priority,
            _ => return None,
        })
    }
}

/// Layout of a tagged errno: marker in bits 24..31, stage in 16..24, detail
/// in 12..16, errno (always below 4096 on Linux) in 0..12.
const TAG: i32 = 0x4b00_0000;
const TAG_MASK: i32 = 0x7f00_0000;

/// A child-side failure decoded in the parent.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChildFailure {
    pub stage: Stage,
    /// For [`Stage::Limit`]: the index into the limit plan.
    pub detail: usize,
    /// 0 when the failure is not an OS error ([`Stage::RegainedRoot`]).
    pub errno: i32,
}

/// Packs stage, detail (< 16) and errno (< 4096) into one errno-sized value.
fn tagged(stage: Stage, detail: usize, errno: i32) -> io::Error {
    let code = TAG | (stage as i32) << 16 | (detail as i32 & 0xf) << 12 | errno & 0xfff;
    io::Error::from_raw_os_error(code)
}

/// The code the launcher reports when a search found nothing to run.
pub(super) fn search_failed(denied: bool) -> i32 {
    let errno = if denied { libc::EACCES } else { libc::ENOENT };
    TAG | (Stage::Search as i32) << 16 | errno
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Recovers a child-side failure from std's spawn error, if it was one.
pub(super) fn decode_error(err: &io::Error) -> Option<ChildFailure> {
    let code = err.raw_os_error()?;
    if code & TAG_MASK != TAG {
        return None;
    }
    let stage = Stage::from_code((code >> 16) & 0xff)?;
    Some(ChildFailure {
        stage,
        detail: ((code >> 12) & 0xf) as usize,
        errno: code & 0xfff,
    })
}

/// Everything the child needs, prepared before the clone.
pub(super) struct ChildSetup {
    limits: Vec<LimitSetting>,
    /// The open-file limits the daemon was started with, set again while
    /// still root for a child that becomes another user: the daemon's own
    /// raised hard limit is no ceiling that user would have had.
    original_nofile: Option<(u64, u64)>,
    identity: Option<Identity>,
    umask: libc::mode_t,
    working_dir: CString,
    highest_signal: libc::c_int,
    /// For helpers of the daemon itself (the bake worker): the pid they are
    /// tied to; they get SIGKILL when its thread that started them ends.
    die_with: Option<libc::pid_t>,
    /// The niceness to drop back to when the daemon runs ahead of it.
    niceness: Option<libc::c_int>,
}

struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl ChildSetup {
    /// Fails only if `working_dir` contains a NUL byte.
    pub fn prepare(
        working_dir: &Path,
        user: Option<&ResolvedUser>,
        resource_limits: &ResourceLimits,
        umask: u32,
        die_with_daemon: bool,
    ) -> Result<ChildSetup, std::ffi::NulError> {
        Ok(ChildSetup {
            limits: limits::plan(resource_limits),
            original_nofile: user.and(limits::original_nofile()),
            identity: user.map(|user| Identity {
                uid: user.uid,
                gid: user.gid,
                groups: user.supplementary.clone(),
            }),
            umask: umask & 0o777,
            working_dir: CString::new(working_dir.as_os_str().as_bytes())?,
            highest_signal: libc::SIGRTMAX(),
            die_with: die_with_daemon.then(|| std::process::id() as libc::pid_t),
            niceness: priority::service_niceness(),
        })
    }

    /// Runs in the cloned child. Order matters: limits are set once the
    /// child is the service's user, so they can lower but never raise the
    /// hard limits that user gets (raising needs root's privilege);
    /// `working_dir` is entered, and the program looked up, as that user, so
    /// it must be reachable by them; the child leaves the daemon's session
    /// and drops back to the services' niceness at the very end (see
    /// `priority`), and resets its signals only once out of that session.
    pub fn apply(&self) -> io::Result<()> {
        if let Some((soft, hard)) = self.original_nofile {
            // Lowering only: cannot fail for root.
            let _ = setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard);
        }
        if let Some(identity) = &self.identity {
            identity.apply()?;
        }
        for (index, limit) in self.limits.iter().enumerate() {
            // nix's setrlimit is a plain syscall wrapper on stack data.
            if let Err(errno) = setrlimit(limit.resource, limit.soft, limit.hard) {
                return Err(tagged(Stage::Limit, index, errno as i32));
            }
        }
        // After the user switch, which clears the setting.
        if let Some(daemon) = self.die_with {
            tie_to_daemon(daemon)?;
        }
        // SAFETY: umask only sets this task's mask; it cannot fail.
        unsafe { libc::syscall(libc::SYS_umask, self.umask) };
        // SAFETY: `working_dir` is a NUL-terminated string owned by `self`.
        if unsafe { libc::chdir(self.working_dir.as_ptr()) } < 0 {
            return Err(tagged(Stage::WorkingDir, 0, last_errno()));
        }
        // Late, so that the set-up above, which the daemon waits for, runs in
        // the daemon's session: one the kernel may favour (see `priority`).
        // Before the signals are reset, so no signal for the daemon's process
        // group reaches a child that could no longer ignore it.
        // SAFETY: setsid has no memory-safety preconditions.
        if unsafe { libc::setsid() } < 0 {
            return Err(tagged(Stage::Setsid, 0, last_errno()));
        }
        self.reset_signals()?;
        mark_inherited_fds_cloexec();
        // Last: until here the child sets up at the daemon's priority, and
        // the daemon waits for it (the clone shares its memory until exec).
        if let Some(nice) = self.niceness {
            // SAFETY: setpriority on this task only changes its niceness.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_setpriority,
                    libc::PRIO_PROCESS,
                    0 as libc::id_t,
                    nice,
                )
            };
            if rc < 0 {
                return Err(tagged(Stage::Priority, 0, last_errno()));
            }
        }
        Ok(())
    }

    /// The daemon blocks signals it handles through tokio, and ignored
    /// dispositions survive `exec`; a service must start with neither, or it
    /// never sees SIGTERM and its shell traps never run.
    ///
    /// Dispositions are reset with the raw syscall because the C library
    /// refuses to touch the realtime signals it reserves for threads, and
    /// those can arrive ignored from whoever started the daemon. Nothing
    /// here uses them any more: only `exec` follows.
    fn reset_signals(&self) -> io::Result<()> {
        // All-zero is SIG_DFL, no flags, empty mask in every architecture's
        // kernel `struct sigaction`, and 64 bytes is larger than any of them.
        let default_action = [0u64; 8];
        let sigset_size = (self.highest_signal as usize).div_ceil(8);
        for signal in 1..=self.highest_signal {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: rt_sigaction reads `default_action` (large enough, see
            // above) and writes nothing since the old-action pointer is null.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default_action.as_ptr(),
                    ptr::null_mut::<libc::c_void>(),
                    sigset_size,
                );
            }
        }
        // SAFETY: `empty` is initialised by sigemptyset before use.
        // Every handler is now the default, so unblocking is safe.
        let empty = [0u64; 8];
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                empty.as_ptr(),
                ptr::null_mut::<libc::c_void>(),
                sigset_size,
            )
        };
        if rc != 0 {
            return Err(tagged(Stage::Signals, 0, last_errno()));
        }
        Ok(())
    }

    /// What the limit at `index` of the plan was, for error messages.
    pub fn limit_at(&self, index: usize) -> Option<(LimitKind, u64)> {
        self.limits.get(index).map(|limit| (limit.kind, limit.soft))
    }

    /// The hard limit the child had for the limit at `index` of the plan:
    /// the daemon's own, which a child inherits.
    pub fn inherited_hard_limit(&self, index: usize) -> Option<u64> {
        let limit = self.limits.get(index)?;
        if let (Resource::RLIMIT_NOFILE, Some((_, hard))) = (limit.resource, self.original_nofile) {
            return Some(hard);
        }
        nix::sys::resource::getrlimit(limit.resource)
            .ok()
            .map(|(_, hard)| hard)
    }
}

impl Identity {
    /// Raw system calls only: glibc's set*id wrappers signal every thread of
    /// the process so they all switch together, and the vfork-style child
    /// shares the daemon's thread list, so they would signal the daemon.
    fn apply(&self) -> io::Result<()> {
        // SAFETY: `groups` is a live slice of gid_t of the given length.
        let groups =
            unsafe { libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) };
        if groups < 0 {
            return Err(tagged(Stage::Groups, 0, last_errno()));
        }
        // SAFETY: plain syscall on an integer; affects only this task.
        if unsafe { libc::syscall(libc::SYS_setgid, self.gid) } < 0 {
            return Err(tagged(Stage::Gid, 0, last_errno()));
        }
        // SAFETY: plain syscall on an integer; affects only this task.
        if unsafe { libc::syscall(libc::SYS_setuid, self.uid) } < 0 {
            return Err(tagged(Stage::Uid, 0, last_errno()));
        }
        // SAFETY: plain syscall on an integer; succeeding here means the drop
        // did not stick and we refuse to run the service.
        if self.uid != 0 && unsafe { libc::syscall(libc::SYS_setuid, 0) } == 0 {
            return Err(tagged(Stage::RegainedRoot, 0, 0));
        }
        Ok(())
    }
}

/// Asks for SIGKILL when the daemon goes, then checks it has not gone
/// already (it could have died between the clone and the request).
fn tie_to_daemon(daemon: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain syscalls on integers; they affect only this task.
    unsafe {
        if libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) < 0
        {
            return Err(tagged(Stage::ParentDeath, 0, last_errno()));
        }
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != daemon {
            return Err(tagged(Stage::ParentDeath, 0, libc::ESRCH));
        }
    }
    Ok(())
}

/// Moves the child into the cgroup whose directory the parent opened, by
/// writing `0` ("the writer") to its `cgroup.procs`, before anything else
/// runs, while it is still root: nothing of the service ever runs outside
/// its cgroup. Only where the child could not be cloned into it.
pub(super) fn join_cgroup(dir: libc::c_int) -> io::Result<()> {
    // SAFETY: a static NUL-terminated name and a descriptor the parent keeps
    // open until we exec; the opened one is closed again right here.
    unsafe {
        let procs = libc::openat(
            dir,
            c"cgroup.procs".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if procs < 0 {
            return Err(tagged(Stage::Cgroup, 0, last_errno()));
        }
        let written = libc::write(procs, b"0".as_ptr().cast(), 1);
        let errno = last_errno();
        libc::close(procs);
        if written != 1 {
            return Err(tagged(Stage::Cgroup, 0, errno));
        }
    }
    Ok(())
}

/// A failure to start the child in its cgroup, seen by the parent (clone3
/// refused it), tagged as if the child had failed to join.
pub(super) fn cgroup_failure(error: io::Error) -> io::Error {
    tagged(Stage::Cgroup, 0, error.raw_os_error().unwrap_or(libc::EIO))
}

/// Descriptors some library opened without O_CLOEXEC would otherwise leak
/// into every service; stdio (0..=2) is kept. Older kernels without
/// close_range just skip this.
fn mark_inherited_fds_cloexec() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on
    // descriptors; it touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}
