//! The state directory, its permissions, and the single-instance lock.
//!
//! Everything the daemon keeps on disk lives under one directory
//! (`$KEPLER_DAEMON_PATH`, default `/var/lib/kepler`). Access to the daemon is
//! granted by the `kepler` group owning that directory and the socket in it; when
//! the group does not exist the daemon falls back to root-only modes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kepler_protocol::{KEPLER_GROUP, PID_FILE, SOCKET_FILE};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, Gid, Group};

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

/// The daemon's log when it runs detached, inside the state directory.
pub const DAEMON_LOG_FILE: &str = "daemon.log";
/// Where each config's state lives, inside the state directory.
pub const CONFIGS_DIR: &str = "configs";

/// What the daemon itself writes under the state directory `root`: the
/// configs' state (snapshots, logs) and its own pid, socket and log. File
/// watches ignore these, so Kepler's own writes never restart a service.
pub fn written_by_kepler(root: &Path) -> Vec<PathBuf> {
    vec![
        root.join(CONFIGS_DIR),
        root.join(PID_FILE),
        root.join(SOCKET_FILE),
        root.join(DAEMON_LOG_FILE),
    ]
}

/// The daemon's state directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// The `kepler` group, when it exists; it owns the directory and the socket.
    group: Option<Gid>,
}

impl StateDir {
    /// A handle on `root` without touching the disk (for clients and tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        StateDir {
            root: root.into(),
            group: None,
        }
    }

    /// Creates the directory if needed and sets its owner and mode:
    /// `0770 root:kepler`, or `0700 root:root` when the group is missing.
    /// Refuses a directory that is a symlink or not owned by root, since another
    /// user could then swap files under the daemon.
    pub fn prepare(root: &Path) -> Result<Self, StartupError> {
        let group = Group::from_name(KEPLER_GROUP).ok().flatten().map(|g| g.gid);
        if group.is_none() {
            tracing::warn!(
                "group `{KEPLER_GROUP}` does not exist, so only root can use the kepler CLI; \
                 create it with `groupadd {KEPLER_GROUP}` and add users with \
                 `usermod -aG {KEPLER_GROUP} <user>`"
            );
        }
        match fs::symlink_metadata(root) {
            Ok(meta) => {
                if meta.file_type().is_symlink() || !meta.is_dir() {
                    return Err(StartupError::Unsafe {
                        path: root.to_path_buf(),
                        reason: "it is not a plain directory".into(),
                    });
                }
                if meta.uid() != 0 {
                    return Err(StartupError::Unsafe {
                        path: root.to_path_buf(),
                        reason: format!("it is owned by uid {}, not root", meta.uid()),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(parent)
                        .map_err(io_err(parent))?;
                }
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(root)
                    .map_err(io_err(root))?;
            }
            Err(e) => return Err(io_err(root)(e)),
        }
        let mode = if group.is_some() { 0o770 } else { 0o700 };
        chown(root, Some(0.into()), Some(group.unwrap_or(0.into())))
            .map_err(|e| io_err(root)(e.into()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(mode)).map_err(io_err(root))?;
        Ok(StateDir {
            root: root.to_path_buf(),
            group,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn socket_path(&self) -> PathBuf {
        self.root.join(SOCKET_FILE)
    }

    pub fn pid_path(&self) -> PathBuf {
        self.root.join(PID_FILE)
    }

    pub fn daemon_log_path(&self) -> PathBuf {
        self.root.join(DAEMON_LOG_FILE)
    }

    pub fn configs_dir(&self) -> PathBuf {
        self.root.join(CONFIGS_DIR)
    }

    /// Gives the socket its access mode: `0660 root:kepler` (or `0600`).
    pub fn secure_socket(&self) -> Result<(), StartupError> {
        let path = self.socket_path();
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        chown(&path, Some(0.into()), Some(self.group.unwrap_or(0.into())))
            .map_err(|e| io_err(&path)(e.into()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io_err(&path))
    }

    /// Removes a socket left behind by a daemon that died without cleaning up.
    /// Only called while holding the instance lock, so it cannot be a live one.
    pub fn remove_stale_socket(&self) -> Result<(), StartupError> {
        let path = self.socket_path();
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!("removed stale socket {}", path.display());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes the socket and pid file on a clean exit.
    pub fn remove_runtime_files(&self) {
        for path in [self.socket_path(), self.pid_path()] {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("could not remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// An exclusive `flock` on the pid file, held for the daemon's lifetime.
///
/// The kernel drops the lock when the process dies, however it dies, so a pid
/// file left by a killed daemon never blocks the next one.
pub struct InstanceLock {
    file: Flock<File>,
}

impl InstanceLock {
    pub fn acquire(state: &StateDir) -> Result<Self, StartupError> {
        let path = state.pid_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(&path))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(InstanceLock { file }),
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                Err(StartupError::AlreadyRunning {
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                    dir: state.root().to_path_buf(),
                })
            }
        }
    }

    /// Records `pid` (the serving process, which differs from the starting one
    /// after `--detach`).
    pub fn write_pid(&mut self, pid: u32) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(&*self.file, "{pid}")?;
        self.file.sync_all()
    }
}
