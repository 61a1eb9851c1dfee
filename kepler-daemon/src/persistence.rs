//! Each config's directory under `configs/<hash>/`, and what is in it.
//!
//! A [`ConfigStore`] holds its directory open ([`TrustedDir`]) and is the one
//! way to its files, so nothing is ever reached by a path resolved again
//! from the state root. Every write is atomic (temp file, fsync, rename,
//! fsync of the directory); every read is bounded and checked.
//!
//! `snapshot.json` is what the daemon runs from: the baked config, whose it
//! is (the uid that owns the config file) and which file it was baked from
//! (device and inode). It is written last, so a directory with a snapshot is
//! complete, and read back with the same checks as a bake worker's answer.
//! The other files are for people and for `recreate`: the config's text,
//! the env files read, the snapshot rendered as YAML, the source path.
//! Directories written by an older Kepler (`expanded_config.yaml` and an
//! owner in `state.json`) are read once, checked the same way, and
//! rewritten in the current form.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Baked, BakedConfig, MAX_SNAPSHOT_BYTES};
use crate::trusted_fs::{TrustError, TrustedDir};

pub const SNAPSHOT: &str = "snapshot.json";
/// The snapshot as YAML, for people; only read back from older layouts.
pub const RENDERED_SNAPSHOT: &str = "expanded_config.yaml";
pub const SOURCE_COPY: &str = "config.yaml";
pub const SOURCE_PATH: &str = "source_path.txt";
pub const STATE: &str = "state.json";
pub const ENV_FILES: &str = "env_files";
pub const LOGS: &str = "logs";

/// Version of the `snapshot.json` layout.
const SNAPSHOT_FORMAT: u32 = 1;
/// Largest `state.json` read (a few hundred bytes per service).
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// `configs/<hash>` for a config path: the first 16 hex digits of the SHA-256
/// of its canonical path, stable across daemon restarts.
pub fn config_dir_name(canonical: &Path) -> String {
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Which file a config was baked from, as the kernel names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceId {
    pub dev: u64,
    pub ino: u64,
}

/// `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSnapshot {
    pub format: u32,
    /// Uid owning the config file when it was baked: whose config it is and
    /// whose rights its processes get.
    pub owner_uid: u32,
    pub source: SourceId,
    pub config: BakedConfig,
}

/// Persisted runtime state of one config (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigState {
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

/// Where an older Kepler recorded the owner.
#[derive(Deserialize)]
struct LegacyOwner {
    owner_uid: u32,
}

/// One config's directory and the files in it.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    dir: Arc<TrustedDir>,
    name: String,
}

impl ConfigStore {
    /// Creates (or opens) the directory of the config at `canonical`, with
    /// its `env_files/` and `logs/`.
    pub fn create(configs: &TrustedDir, canonical: &Path) -> Result<Self, TrustError> {
        let name = config_dir_name(canonical);
        let dir = configs.create_dir(&name)?;
        dir.create_dir(ENV_FILES)?;
        dir.create_dir(LOGS)?;
        Ok(ConfigStore {
            dir: Arc::new(dir),
            name,
        })
    }

    /// Opens an existing config directory found in `configs/`; `None` if it
    /// is gone. Its name must be what the daemon would have given it.
    pub fn open(configs: &TrustedDir, name: &OsStr) -> Result<Option<Self>, TrustError> {
        let Some(text) = name.to_str().filter(|n| is_dir_name(n)) else {
            return Err(TrustError::Untrusted {
                path: configs.shown(name),
                reason: "kepler never makes a directory of that name here".into(),
            });
        };
        let Some(dir) = configs.open_dir(name)? else {
            return Ok(None);
        };
        dir.create_dir(ENV_FILES)?;
        dir.create_dir(LOGS)?;
        Ok(Some(ConfigStore {
            dir: Arc::new(dir),
            name: text.to_owned(),
        }))
    }

    /// The directory's name in `configs/`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the directory is, for messages and reports.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `logs/`, for the log store.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.shown(LOGS)
    }

    /// The config's log directory, created if needed, opened through this
    /// store's descriptor.
    pub fn open_logs(&self) -> Result<TrustedDir, TrustError> {
        self.dir.create_dir(LOGS)
    }

    /// Opens a file of the config's directory to update it in place
    /// (created `0600` if missing), e.g. the usage history.
    pub fn open_update(&self, name: &str) -> Result<std::fs::File, TrustError> {
        self.dir.open_update(name)
    }

    /// Opens a file of the config's directory to read; `None` if missing.
    pub fn open_read(&self, name: &str) -> Result<Option<std::fs::File>, TrustError> {
        self.dir.open_read(name)
    }

    pub fn has_snapshot(&self) -> bool {
        matches!(self.dir.stat(SNAPSHOT), Ok(Some(_)))
    }

    /// Writes everything a bake produced: the source copy, the env files, the
    /// source path, the rendered snapshot, then `snapshot.json` last, so a
    /// directory with a snapshot is always complete. Returns what was stored.
    pub fn write_bake(
        &self,
        baked: &Baked,
        owner_uid: u32,
        source: SourceId,
    ) -> Result<StoredSnapshot, TrustError> {
        self.dir
            .write_atomic(SOURCE_COPY, baked.source_text.as_bytes())?;
        if let Some(env_dir) = self.dir.open_dir(ENV_FILES)? {
            for (index, env_file) in baked.env_files.iter().enumerate() {
                let name = env_file
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "env".into());
                env_dir.write_atomic(format!("{index}-{name}"), env_file.contents.as_bytes())?;
            }
        }
        self.dir.write_atomic(
            SOURCE_PATH,
            baked.config.config_file.as_os_str().as_encoded_bytes(),
        )?;
        self.dir.write_atomic(
            RENDERED_SNAPSHOT,
            crate::config::render_snapshot(&baked.config).as_bytes(),
        )?;
        let stored = StoredSnapshot {
            format: SNAPSHOT_FORMAT,
            owner_uid,
            source,
            config: baked.config.clone(),
        };
        let json = serde_json::to_vec(&stored).expect("a snapshot always serialises");
        self.dir.write_atomic(SNAPSHOT, &json)?;
        Ok(stored)
    }

    /// The snapshot, checked like a bake worker's answer, and only if it
    /// belongs in this directory; `None` when there is none. A directory of
    /// an older Kepler is read and rewritten in the current form.
    pub fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, String> {
        let shown = self.dir.shown(SNAPSHOT);
        let stored = match self.dir.read(SNAPSHOT, MAX_SNAPSHOT_BYTES) {
            Ok(Some(bytes)) => {
                decode_stored(&bytes).map_err(|e| format!("{}: {e}", shown.display()))?
            }
            Ok(None) => match self.read_legacy()? {
                Some(stored) => stored,
                None => return Ok(None),
            },
            Err(e) => return Err(e.to_string()),
        };
        let expected = config_dir_name(&stored.config.config_file);
        if expected != self.name {
            return Err(format!(
                "{}: the snapshot is for {}, whose state belongs in configs/{expected}",
                shown.display(),
                stored.config.config_file.display()
            ));
        }
        Ok(Some(stored))
    }

    /// An older Kepler's `expanded_config.yaml`, with the owner it recorded
    /// in `state.json` (refused without one: never defaulted to root).
    fn read_legacy(&self) -> Result<Option<StoredSnapshot>, String> {
        let shown = self.dir.shown(RENDERED_SNAPSHOT);
        let Some(bytes) = self
            .dir
            .read(RENDERED_SNAPSHOT, MAX_SNAPSHOT_BYTES)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", shown.display()))?;
        let config =
            crate::config::load_snapshot(&text).map_err(|e| format!("{}: {e}", shown.display()))?;
        let state_shown = self.dir.shown(STATE);
        let owner = self
            .dir
            .read(STATE, MAX_STATE_BYTES)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{} records no owner ({} is missing); run `kepler recreate` as the owner of {}",
                    shown.display(),
                    state_shown.display(),
                    config.config_file.display()
                )
            })?;
        let owner: LegacyOwner = serde_json::from_slice(&owner)
            .map_err(|e| format!("{}: no owner recorded: {e}", state_shown.display()))?;
        let source = match std::fs::metadata(&config.config_file) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                if meta.uid() != owner.owner_uid {
                    return Err(format!(
                        "{} was loaded by uid {} but the file belongs to uid {}; configs now \
                         belong to the owner of their file: that user should run `kepler recreate`",
                        config.config_file.display(),
                        owner.owner_uid,
                        meta.uid()
                    ));
                }
                SourceId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                }
            }
            Err(_) => SourceId::default(),
        };
        let stored = StoredSnapshot {
            format: SNAPSHOT_FORMAT,
            owner_uid: owner.owner_uid,
            source,
            config,
        };
        let json = serde_json::to_vec(&stored).expect("a snapshot always serialises");
        self.dir
            .write_atomic(SNAPSHOT, &json)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            config = %stored.config.config_file.display(),
            "converted the state of an older kepler"
        );
        Ok(Some(stored))
    }

    /// The persisted state, or `None` when there is none or it is unreadable
    /// (reported, since a bad state file must not stop the config from loading).
    pub fn read_state(&self) -> Option<ConfigState> {
        let bytes = match self.dir.read(STATE, MAX_STATE_BYTES) {
            Ok(bytes) => bytes?,
            Err(e) => {
                tracing::warn!("ignoring {e}");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!(
                    "ignoring unreadable {}: {e}",
                    self.dir.shown(STATE).display()
                );
                None
            }
        }
    }

    pub fn write_state(&self, state: &impl Serialize) -> Result<(), TrustError> {
        // Compact: it is rewritten whole, so its size is what a write costs.
        let json = serde_json::to_vec(state).expect("state always serialises");
        self.dir.write_atomic(STATE, &json)
    }
}

/// A `configs/` entry name kepler makes: 16 lowercase hex digits.
fn is_dir_name(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Decodes `snapshot.json` and checks the config in it.
fn decode_stored(bytes: &[u8]) -> Result<StoredSnapshot, String> {
    let stored: StoredSnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if stored.format != SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {} is not the {SNAPSHOT_FORMAT} this kepler reads",
            stored.format
        ));
    }
    crate::config::check_snapshot(&stored.config)
        .map_err(|e| format!("invalid config snapshot: {e}"))?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dir_names_are_stable_and_distinct() {
        let a = config_dir_name(Path::new("/srv/a/kepler.yaml"));
        assert_eq!(a, config_dir_name(Path::new("/srv/a/kepler.yaml")));
        assert_ne!(a, config_dir_name(Path::new("/srv/b/kepler.yaml")));
        assert_eq!(a.len(), 16);
        assert!(is_dir_name(&a));
        assert!(!is_dir_name("../x"));
    }

    #[test]
    fn old_state_files_with_an_owner_still_parse() {
        let old =
            br#"{"owner_uid":1000,"global_init_done":true,"services":{"web":{"desired":true}}}"#;
        let state: ConfigState = serde_json::from_slice(old).unwrap();
        assert!(state.global_init_done);
        assert!(state.services["web"].desired);
    }
}
