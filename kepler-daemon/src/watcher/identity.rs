//! Looking at a service's files as the service's user would.
//!
//! The daemon is root, so a directory walk or an inotify watch done with its
//! own rights would see into directories the service's user cannot enter,
//! and what it then reports (a change, "does not exist") would tell that
//! user about them. The watcher thread instead takes the user's identity
//! for file access (fsuid, fsgid and supplementary groups) around every
//! look at a service's files. These are per-thread credentials when set
//! with the raw system calls (glibc's wrappers would change every thread of
//! the daemon), and a non-zero fsuid also drops root's file capabilities
//! (`CAP_DAC_OVERRIDE` and friends) for as long as it is set.

use std::io;

/// Who to be while looking at a service's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as the service gets them.
    pub groups: Vec<u32>,
}

/// While alive, the calling thread accesses files as an [`FsIdentity`];
/// dropping it restores the thread's previous identity.
#[must_use]
pub(super) struct Entered {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

fn set_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of gid_t.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setfsuid/setfsgid return the previous value and report no error; asking
/// with an invalid id (-1) changes nothing and returns the current one.
fn set_fsuid(uid: u32) -> u32 {
    // SAFETY: no memory is involved.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

fn set_fsgid(gid: u32) -> u32 {
    // SAFETY: no memory is involved.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

fn current_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: a zero-length query writes nothing.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0; count as usize];
    // SAFETY: the buffer holds `count` entries.
    let got = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(got as usize);
    Ok(groups)
}

impl FsIdentity {
    /// Takes this identity for file access on the calling thread only.
    /// Fails, with the thread unchanged, if the kernel does not take it.
    pub(super) fn enter(&self) -> io::Result<Entered> {
        let saved = Entered {
            uid: set_fsuid(u32::MAX),
            gid: set_fsgid(u32::MAX),
            groups: current_groups()?,
        };
        // Groups and gid first: changing them needs CAP_SETGID, which a
        // non-zero fsuid does not drop, but keep the order that also works
        // for a daemon that is not root.
        set_groups(&self.groups)?;
        set_fsgid(self.gid);
        set_fsuid(self.uid);
        if set_fsuid(u32::MAX) != self.uid || set_fsgid(u32::MAX) != self.gid {
            drop(saved);
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "cannot take uid {} / gid {} for file access",
                    self.uid, self.gid
                ),
            ));
        }
        Ok(saved)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        set_fsuid(self.uid);
        set_fsgid(self.gid);
        if let Err(e) = set_groups(&self.groups) {
            tracing::error!("file watcher: cannot restore its groups: {e}");
        }
    }
}
