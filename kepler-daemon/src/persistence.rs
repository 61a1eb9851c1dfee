//! State and snapshot persistence: each config's directory under
//! `configs/<hash>/`, and atomic writes of every file in it.
//!
//! Every write goes to a temporary file in the same directory, is fsynced and
//! renamed over the target, so a crash at any moment leaves either the old or
//! the new file, never a torn one. Files are created with O_NOFOLLOW|O_EXCL so
//! a symlink planted in the directory is never written through.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Baked, BakedConfig};

pub const SOURCE_COPY: &str = "config.yaml";
pub const SNAPSHOT: &str = "expanded_config.yaml";
pub const SOURCE_PATH: &str = "source_path.txt";
pub const STATE: &str = "state.json";
pub const ENV_FILES: &str = "env_files";
pub const LOGS: &str = "logs";

/// Writes `contents` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself must survive a power cut too.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `configs/<hash>` for a config path: the first 16 hex digits of the SHA-256
/// of its canonical path, stable across daemon restarts.
pub fn config_dir_name(canonical: &Path) -> String {
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Persisted runtime state of one config (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigState {
    /// Uid of the caller that first loaded the config.
    pub owner_uid: u32,
    /// The global `on_init` hook has run since the last bake.
    #[serde(default)]
    pub global_init_done: bool,
    /// Keyed by instance name (`web`, or `web.1` … with `replicas:`).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// Instance counts set by `kepler scale`, kept until `recreate`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, u32>,
}

/// What survives a daemon restart about one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// The user wants it up: it is started again when the daemon restarts.
    #[serde(default)]
    pub desired: bool,
    /// Process group of the running process, with the leader's start time (in
    /// clock ticks since boot) so a recycled pid is never mistaken for it.
    #[serde(default)]
    pub pgid: Option<i32>,
    #[serde(default)]
    pub start_ticks: Option<u64>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub last_exit_code: Option<i32>,
    /// The service's `on_init` hook has run since the last bake.
    #[serde(default)]
    pub init_done: bool,
}

/// One config's directory and the files in it.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    root: PathBuf,
}

impl ConfigStore {
    pub fn new(configs_dir: &Path, canonical_source: &Path) -> Self {
        ConfigStore {
            root: configs_dir.join(config_dir_name(canonical_source)),
        }
    }

    pub fn at(root: PathBuf) -> Self {
        ConfigStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(LOGS)
    }

    pub fn has_snapshot(&self) -> bool {
        self.root.join(SNAPSHOT).is_file()
    }

    fn ensure_dirs(&self) -> io::Result<()> {
        for dir in [
            self.root.clone(),
            self.root.join(ENV_FILES),
            self.logs_dir(),
        ] {
            match fs::DirBuilder::new().mode(0o770).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = fs::symlink_metadata(&dir)?;
                    if !meta.is_dir() {
                        return Err(io::Error::other(format!(
                            "{} exists and is not a directory",
                            dir.display()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything a bake produced: the source copy, the env files, the
    /// snapshot and the source path. The snapshot is written last, so a
    /// directory with a snapshot is always complete.
    pub fn write_bake(&self, baked: &Baked) -> io::Result<()> {
        self.ensure_dirs()?;
        write_atomic(&self.root.join(SOURCE_COPY), baked.source_text.as_bytes())?;
        for (index, env_file) in baked.env_files.iter().enumerate() {
            let name = env_file
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "env".into());
            let target = self.root.join(ENV_FILES).join(format!("{index}-{name}"));
            write_atomic(&target, env_file.contents.as_bytes())?;
        }
        write_atomic(
            &self.root.join(SOURCE_PATH),
            baked.config.config_file.as_os_str().as_encoded_bytes(),
        )?;
        write_atomic(
            &self.root.join(SNAPSHOT),
            crate::config::render_snapshot(&baked.config).as_bytes(),
        )
    }

    pub fn read_snapshot(&self) -> Result<BakedConfig, String> {
        let path = self.root.join(SNAPSHOT);
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::config::load_snapshot(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn read_source_path(&self) -> Option<PathBuf> {
        let bytes = fs::read(self.root.join(SOURCE_PATH)).ok()?;
        Some(PathBuf::from(String::from_utf8(bytes).ok()?))
    }

    /// The persisted state, or `None` when there is none or it is unreadable
    /// (reported, since a bad state file must not stop the config from loading).
    pub fn read_state(&self) -> Option<ConfigState> {
        let path = self.root.join(STATE);
        let text = fs::read(&path).ok()?;
        match serde_json::from_slice(&text) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!("ignoring unreadable {}: {e}", path.display());
                None
            }
        }
    }

    pub fn write_state(&self, state: &ConfigState) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        write_atomic(&self.root.join(STATE), &json)
    }

    /// Deletes the whole directory (prune).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_contents_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_never_follows_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        // The link was replaced, the file it pointed at was not written through.
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn config_dir_names_are_stable_and_distinct() {
        let a = config_dir_name(Path::new("/srv/a/kepler.yaml"));
        assert_eq!(a, config_dir_name(Path::new("/srv/a/kepler.yaml")));
        assert_ne!(a, config_dir_name(Path::new("/srv/b/kepler.yaml")));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn state_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::at(dir.path().to_path_buf());
        let mut state = ConfigState {
            owner_uid: 1000,
            ..Default::default()
        };
        state.services.insert(
            "web".into(),
            ServiceState {
                desired: true,
                pgid: Some(42),
                start_ticks: Some(7),
                restarts: 2,
                last_exit_code: None,
                init_done: true,
            },
        );
        store.write_state(&state).unwrap();
        assert_eq!(store.read_state(), Some(state));
    }
}
