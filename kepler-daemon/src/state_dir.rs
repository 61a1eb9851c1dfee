//! The state directory: its layout and modes, the single-instance lock, the
//! socket and the daemon's own log.
//!
//! Everything the daemon keeps on disk lives under one directory
//! (`$KEPLER_DAEMON_PATH`, default `/var/lib/kepler`):
//!
//! ```text
//! <root>/            0750 root:kepler   members may enter (to reach the socket), never write
//!   kepler.sock      0660 root:kepler
//!   kepler.pid       0600 root:root     flock-ed while the daemon runs
//!   daemon.log       0600 root:root     the daemon's output with --detach
//!   configs/         0700 root:root     one directory per config (see persistence)
//! ```
//!
//! Without a `kepler` group the root is `0700 root:root` and the socket
//! `0600`. The root is opened once, by descriptor; everything below it is
//! reached through that descriptor ([`TrustedDir`]). A state directory left
//! by an older Kepler (`0770`, group-writable) is tightened before anything
//! in it is read. A runtime file someone else planted (a FIFO as
//! `daemon.log`, a link as `kepler.pid`) carries nothing the daemon needs, so
//! it is removed and made again; a `configs/` that is not root's alone is
//! moved aside unread, and the daemon starts without it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kepler_protocol::{KEPLER_GROUP, PID_FILE, SOCKET_FILE};
use nix::unistd::{Gid, Group};
use rustix::fs::{
    chmodat, chownat, fchmod, fchown, flock, fstat, mkdirat, openat, AtFlags, FileType,
    FlockOperation, Mode, OFlags,
};

use crate::trusted_fs::{TrustError, TrustedDir};

pub const DAEMON_LOG: &str = "daemon.log";
pub const CONFIGS: &str = "configs";

/// How much of `daemon.log` a failed `--detach` shows.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// Errors that stop the daemon from starting, each worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("state directory {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "state directory {path} is not safe to use: {reason}; remove it or point \
         KEPLER_DAEMON_PATH somewhere else"
    )]
    Unsafe { path: PathBuf, reason: String },
    #[error("{0}; fix or remove it, then start the daemon again")]
    Untrusted(TrustError),
    #[error(
        "another kepler daemon (pid {pid}) is already running with state directory {dir}; \
         stop it with `kepler daemon stop`"
    )]
    AlreadyRunning { pid: String, dir: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StartupError + '_ {
    move |source| StartupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the daemon itself writes under the state directory `root`: the
/// configs' state (snapshots, logs) and its own pid, socket and log. File
/// watches ignore these, so Kepler's own writes never restart a service.
pub fn written_by_kepler(root: &Path) -> Vec<PathBuf> {
    vec![
        root.join(CONFIGS),
        root.join(PID_FILE),
        root.join(SOCKET_FILE),
        root.join(DAEMON_LOG),
    ]
}

/// The daemon's state directory, held open.
#[derive(Debug)]
pub struct StateDir {
    root: TrustedDir,
    configs: Arc<TrustedDir>,
    /// The `kepler` group, when it exists; it owns the directory and the socket.
    group: Option<Gid>,
}

impl StateDir {
    /// Creates the directory if needed, checks it, and gives it its owner and
    /// mode: `0750 root:kepler`, or `0700 root:root` without the group.
    /// Refuses a state directory that is a symlink or not owned by root, or
    /// whose parent directories someone else could write (they could swap
    /// the whole directory), and a `configs/` directory that is not root's.
    pub fn prepare(root: &Path) -> Result<Self, StartupError> {
        let group = Group::from_name(KEPLER_GROUP).ok().flatten().map(|g| g.gid);
        if group.is_none() {
            tracing::warn!(
                "group `{KEPLER_GROUP}` does not exist, so only root can use the kepler CLI; \
                 create it with `groupadd {KEPLER_GROUP}` and add users with \
                 `usermod -aG {KEPLER_GROUP} <user>`"
            );
        }
        let root_path = std::path::absolute(root).map_err(io_err(root))?;
        let (Some(parent), Some(name)) = (root_path.parent(), root_path.file_name()) else {
            return Err(StartupError::Unsafe {
                path: root_path.clone(),
                reason: "it has no parent directory".into(),
            });
        };
        let parent = open_parent(parent, &root_path)?;
        let fd = open_root(&parent, name, &root_path)?;
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        fchown(
            &fd,
            None,
            Some(group.map_or(rustix::fs::Gid::ROOT, |g| {
                rustix::fs::Gid::from_raw(g.as_raw())
            })),
        )
        .map_err(|e| io_err(&root_path)(e.into()))?;
        fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| io_err(&root_path)(e.into()))?;
        let root = TrustedDir::from_checked(fd, root_path);
        let configs = Arc::new(open_configs(&root)?);
        Ok(StateDir {
            root,
            configs,
            group,
        })
    }

    /// Where the state directory is (for messages and clients).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.root.shown(SOCKET_FILE)
    }

    pub fn pid_path(&self) -> PathBuf {
        self.root.shown(PID_FILE)
    }

    pub fn daemon_log_path(&self) -> PathBuf {
        self.root.shown(DAEMON_LOG)
    }

    /// `configs/`, held open.
    pub fn configs(&self) -> &Arc<TrustedDir> {
        &self.configs
    }

    /// Removes whatever is left at the socket's name (only called while
    /// holding the instance lock, so it cannot be a live daemon's), binds a
    /// new socket there through the directory's descriptor, and gives it its
    /// access mode: `0660 root:kepler` (or `0600`).
    pub fn bind_socket(&self) -> Result<UnixListener, StartupError> {
        let path = self.socket_path();
        if self
            .root
            .stat(SOCKET_FILE)
            .map_err(StartupError::Untrusted)?
            .is_some()
        {
            self.root
                .remove_tree(SOCKET_FILE)
                .map_err(StartupError::Untrusted)?;
            tracing::info!("removed stale socket {}", path.display());
        }
        let listener = UnixListener::bind(self.root.fd_path().join(SOCKET_FILE))
            .map_err(|e| io_err(&path)(e))?;
        // Nobody but root may write the directory, so the name still holds
        // the socket just bound.
        let gid = self.group.map_or(0, Gid::as_raw);
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        chownat(
            &self.root,
            SOCKET_FILE,
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(&path)(e.into()))?;
        chmodat(
            &self.root,
            SOCKET_FILE,
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(&path)(e.into()))?;
        Ok(listener)
    }

    /// `daemon.log`, opened to append (a planted one is replaced).
    pub fn open_daemon_log(&self) -> Result<File, StartupError> {
        open_or_replace(&self.root, DAEMON_LOG, |dir, name| dir.open_append(name))
    }

    /// The last lines of `daemon.log` (at most [`LOG_TAIL_BYTES`]), read
    /// without following or blocking; empty if it cannot be read.
    pub fn daemon_log_tail(&self, lines: usize) -> Vec<String> {
        let Ok(Some(mut file)) = self.root.open_read(DAEMON_LOG) else {
            return Vec::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|line| line.to_string())
            .collect()
    }

    /// Removes the socket and pid file on a clean exit.
    pub fn remove_runtime_files(&self) {
        for name in [SOCKET_FILE, PID_FILE] {
            if let Err(e) = self.root.remove_file(name) {
                tracing::warn!("could not remove {e}");
            }
        }
    }
}

/// Opens the state directory's parent by path, creating it (`0755`) if
/// needed, after checking that only root can write it or any directory
/// above it (else the state directory could be swapped under the daemon).
fn open_parent(parent: &Path, root: &Path) -> Result<OwnedFd, StartupError> {
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    let canonical = parent.canonicalize().map_err(io_err(parent))?;
    crate::write_access::check_directories(&canonical, root).map_err(|verdict| {
        StartupError::Unsafe {
            path: root.to_path_buf(),
            reason: verdict.to_string(),
        }
    })?;
    openat(
        rustix::fs::CWD,
        &canonical,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(parent)(e.into()))
}

/// Creates (`0700`) or opens the state root below `parent`: a real
/// directory owned by root.
fn open_root(parent: &OwnedFd, name: &OsStr, root: &Path) -> Result<OwnedFd, StartupError> {
    match mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io_err(root)(e.into())),
    }
    let unsafe_dir = |reason: String| StartupError::Unsafe {
        path: root.to_path_buf(),
        reason,
    };
    let fd = match openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(unsafe_dir("it is not a plain directory".into()))
        }
        Err(e) => return Err(io_err(root)(e.into())),
    };
    let stat = fstat(&fd).map_err(|e| io_err(root)(e.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Err(unsafe_dir("it is not a plain directory".into()));
    }
    if stat.st_uid != 0 {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not root",
            stat.st_uid
        )));
    }
    Ok(fd)
}

/// Opens `configs/`. One that is not root's alone (planted under an older,
/// group-writable layout) is never read: it is moved aside, kept for the
/// operator to inspect, and the daemon starts with an empty one.
fn open_configs(root: &TrustedDir) -> Result<TrustedDir, StartupError> {
    match root.create_dir(CONFIGS) {
        Ok(configs) => Ok(configs),
        Err(TrustError::Untrusted { path, reason }) => {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = format!("{CONFIGS}.untrusted.{seconds}");
            root.rename(CONFIGS, &aside)
                .map_err(StartupError::Untrusted)?;
            tracing::error!(
                "{} is not safe to use: {reason}; moved it to {} unread and started without \
                 its configs",
                path.display(),
                root.shown(&aside).display()
            );
            root.create_dir(CONFIGS).map_err(StartupError::Untrusted)
        }
        Err(e) => Err(StartupError::Untrusted(e)),
    }
}

/// Opens a runtime file with `open`; one that is not a root-owned regular
/// file (planted under an older, group-writable layout) is removed and
/// made again, since it holds nothing the daemon needs.
fn open_or_replace(
    dir: &TrustedDir,
    name: &str,
    open: impl Fn(&TrustedDir, &str) -> Result<File, TrustError>,
) -> Result<File, StartupError> {
    match open(dir, name) {
        Ok(file) => Ok(file),
        Err(TrustError::Untrusted { path, reason }) => {
            tracing::warn!("replacing {}: {reason}", path.display());
            dir.remove_tree(name).map_err(StartupError::Untrusted)?;
            open(dir, name).map_err(StartupError::Untrusted)
        }
        Err(e) => Err(StartupError::Untrusted(e)),
    }
}

/// The daemon's claim on its state directory, held for its lifetime: an
/// exclusive `flock` on the directory itself (which nobody can swap) and on
/// `kepler.pid` (which older daemons lock).
///
/// The kernel drops the locks when the process dies, however it dies, so a
/// pid file left by a killed daemon never blocks the next one.
pub struct InstanceLock {
    _dir: OwnedFd,
    file: File,
}

impl InstanceLock {
    pub fn acquire(state: &StateDir) -> Result<Self, StartupError> {
        let root = state.root();
        let dir = openat(
            &state.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(root)(e.into()))?;
        let running = || StartupError::AlreadyRunning {
            pid: recorded_pid(state).unwrap_or_else(|| "unknown".into()),
            dir: root.to_path_buf(),
        };
        if flock(&dir, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(running());
        }
        let file = open_or_replace(&state.root, PID_FILE, |dir, name| dir.open_update(name))?;
        if flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(running());
        }
        Ok(InstanceLock { _dir: dir, file })
    }

    /// The two locked descriptors (the state directory and the pid file),
    /// for an upgrade to pass on: the lock is never let go of.
    pub fn raw_fds(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        use std::os::fd::AsRawFd;
        (self._dir.as_raw_fd(), self.file.as_raw_fd())
    }

    /// The lock a previous daemon held, handed over across `execve`.
    ///
    /// # Safety
    /// Both descriptors must be open, owned by nobody else in this process,
    /// and be the ones [`raw_fds`](Self::raw_fds) gave the previous daemon.
    pub unsafe fn from_raw_fds(dir: std::os::fd::RawFd, file: std::os::fd::RawFd) -> Self {
        use std::os::fd::FromRawFd;
        InstanceLock {
            _dir: OwnedFd::from_raw_fd(dir),
            file: File::from_raw_fd(file),
        }
    }

    /// Records `pid` (the serving process, which differs from the starting one
    /// after `--detach`).
    pub fn write_pid(&mut self, pid: u32) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{pid}")?;
        self.file.sync_all()
    }
}

/// The pid in `kepler.pid`, if it can be read.
fn recorded_pid(state: &StateDir) -> Option<String> {
    let bytes = state.root.read(PID_FILE, 64).ok()??;
    let pid = String::from_utf8_lossy(&bytes).trim().to_string();
    (!pid.is_empty()).then_some(pid)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    fn as_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("SKIP: the state directory must be owned by root; run the tests as root");
        false
    }

    #[test]
    fn an_old_group_writable_layout_is_tightened_and_planted_runtime_files_replaced() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o770)).unwrap();
        nix::unistd::mkfifo(
            &root.join(DAEMON_LOG),
            nix::sys::stat::Mode::from_bits_truncate(0o666),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join(PID_FILE)).unwrap();

        let state = StateDir::prepare(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().mode() & 0o7777;
        assert!(mode == 0o750 || mode == 0o700, "{mode:o}");
        let mut lock = InstanceLock::acquire(&state).unwrap();
        lock.write_pid(42).unwrap();
        assert!(std::fs::symlink_metadata(root.join(PID_FILE))
            .unwrap()
            .is_file());
        let _log = state.open_daemon_log().unwrap();
        assert!(!std::fs::symlink_metadata(root.join(DAEMON_LOG))
            .unwrap()
            .file_type()
            .is_fifo());
        let second = StateDir::prepare(&root).unwrap();
        let err = InstanceLock::acquire(&second).err().unwrap().to_string();
        assert!(err.contains("pid 42"), "{err}");
    }

    #[test]
    fn configs_not_owned_by_root_are_set_aside_unread() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        std::fs::create_dir_all(root.join(CONFIGS).join("0123456789abcdef")).unwrap();
        std::os::unix::fs::chown(root.join(CONFIGS), Some(65534), None).unwrap();
        let state = StateDir::prepare(&root).unwrap();
        assert!(state.configs().entries().unwrap().is_empty());
        let aside: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("configs.untrusted."))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn a_state_dir_under_a_directory_others_may_write_is_refused() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::prepare(&open.join("state"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("every user"), "{err}");
    }

    #[test]
    fn the_socket_is_bound_through_the_directory_and_given_its_mode() {
        if !as_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::prepare(&tmp.path().join("state")).unwrap();
        let _lock = InstanceLock::acquire(&state).unwrap();
        let _listener = state.bind_socket().unwrap();
        let meta = std::fs::symlink_metadata(state.socket_path()).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.uid(), 0);
        let mode = meta.mode() & 0o7777;
        assert!(mode == 0o660 || mode == 0o600, "{mode:o}");
    }
}
