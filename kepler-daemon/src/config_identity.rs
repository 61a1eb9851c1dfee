//! Which config file a request is about, found with the caller's rights.
//!
//! The CLI sends a path, which is only a claim. The daemon resolves it once
//! per request into the file's canonical path, its device and inode, and
//! the uid that owns it. The canonical path is the config's one name: the
//! registry key, the name of its state directory and the snapshot's
//! `config_file` all come from it, so a symlink or `..` can never make one
//! file two configs. The file's owner is whose config it is.
//!
//! A member's path is resolved on a short-lived thread that has taken the
//! member's filesystem identity (uid, gid and groups, with the raw
//! per-thread system calls), so a lookup by the root daemon never tells a
//! member anything about a path it could not reach itself. Nothing is
//! opened: a FIFO or a device named as a config is refused from its
//! metadata, without blocking.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kepler_protocol::ErrorKind;
use tokio::sync::oneshot;

use crate::config_actor::ActorError;
use crate::persistence::SourceId;
use crate::server::Caller;

/// A config file as the kernel names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIdentity {
    /// Canonical: absolute, no symlinks, no `.` or `..`.
    pub path: PathBuf,
    pub source: SourceId,
    /// Who owns the file, and so the config.
    pub owner_uid: u32,
}

/// Resolves `path` as `caller` would see it.
pub async fn identify(caller: &Caller, path: &Path) -> Result<ConfigIdentity, ActorError> {
    let path = path.to_path_buf();
    let outcome = if caller.is_root() {
        tokio::task::spawn_blocking(move || resolve(&path))
            .await
            .map_err(|e| e.to_string())
    } else {
        let mut groups = caller.groups.clone();
        if !groups.contains(&caller.gid) {
            groups.push(caller.gid);
        }
        as_user(caller.uid, caller.gid, groups, move || resolve(&path)).await
    };
    match outcome {
        Ok(Ok(identity)) => Ok(identity),
        Ok(Err(message)) => Err(ActorError::new(ErrorKind::NotFound, message)),
        Err(message) => Err(ActorError::new(
            ErrorKind::Failed,
            format!("cannot look up the config file: {message}"),
        )),
    }
}

/// The canonical path and metadata of a config file (run with the caller's
/// rights, so errors are only ever about what the caller can see).
fn resolve(path: &Path) -> Result<ConfigIdentity, String> {
    if !path.is_absolute() {
        return Err(format!("config path {} is not absolute", path.display()));
    }
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("cannot open the config file {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(&canonical)
        .map_err(|e| format!("cannot open the config file {}: {e}", canonical.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file; a config must be a plain file",
            canonical.display()
        ));
    }
    Ok(ConfigIdentity {
        path: canonical,
        source: SourceId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        owner_uid: meta.uid(),
    })
}

/// Runs `work` on a new thread whose filesystem identity is `uid`, `gid`
/// and `groups`; the thread ends with `work`, taking the identity with it.
async fn as_user<T: Send + 'static>(
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    std::thread::Builder::new()
        .name("kepler-as-caller".into())
        .spawn(move || {
            let outcome = become_on_this_thread(uid, gid, &groups).map(|()| work());
            let _ = reply.send(outcome);
        })
        .map_err(|e| e.to_string())?;
    answer
        .await
        .map_err(|_| "the lookup thread ended early".to_string())?
        .map_err(|e| e.to_string())
}

/// Takes `uid`/`gid`/`groups` as this thread's filesystem identity. Raw
/// system calls: glibc's wrappers would switch every thread of the daemon.
/// The real and effective ids stay root's; permission checks on paths use
/// the filesystem ids, and root's file capabilities leave the effective set
/// while the filesystem uid is not 0.
fn become_on_this_thread(uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<()> {
    let unchanged = || std::io::Error::other("the kernel kept the daemon's own identity");
    // SAFETY: `groups` is a live slice of gid_t of the given length.
    if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain syscalls on integers, affecting only this thread. An
    // invalid id (-1) changes nothing and returns the current one.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        if libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != gid {
            return Err(unchanged());
        }
        libc::syscall(libc::SYS_setfsuid, uid);
        if libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != uid {
            return Err(unchanged());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn caller(uid: u32) -> Caller {
        Caller {
            pid: 1,
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_symlink_resolves_to_the_file_and_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kepler.yaml");
        std::fs::write(&file, "x").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link.yaml")).unwrap();
        let found = identify(&caller(0), &dir.path().join("sub/../link.yaml"))
            .await
            .map(|i| i.path);
        // `sub` does not exist, so `..` cannot be skipped lexically.
        assert!(found.is_err());
        let found = identify(&caller(0), &dir.path().join("link.yaml"))
            .await
            .unwrap();
        assert_eq!(found.path, file.canonicalize().unwrap());
        assert_eq!(found.owner_uid, nix::unistd::geteuid().as_raw());
    }

    #[tokio::test]
    async fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("kepler.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = identify(&caller(0), &fifo).await.unwrap_err();
        assert!(
            err.message.contains("not a regular file"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn a_member_cannot_look_into_a_directory_it_cannot_enter() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: taking another user's identity needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::write(private.join("kepler.yaml"), "x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = identify(&caller(65534), &private.join("kepler.yaml"))
            .await
            .unwrap_err();
        assert!(err.message.contains("Permission denied"), "{}", err.message);
        // Root sees it, and the daemon's own identity was never changed.
        identify(&caller(0), &private.join("kepler.yaml"))
            .await
            .unwrap();
        assert!(nix::unistd::geteuid().is_root());
    }
}
