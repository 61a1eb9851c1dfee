//! The registry of config actors: the only shared map in the daemon.
//!
//! A config is loaded on first reference: baked from its source file (in a
//! blocking task, since Lua may run), written to its state directory, and
//! given an actor. On daemon start every config with a snapshot is found
//! again and its actor resumes what was running.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dashmap::DashMap;
use kepler_protocol::{ConfigRef, ErrorKind, SysEnv};
use tokio::sync::Mutex;

use crate::config::{self, Baked};
use crate::config_actor::{self, ActorError, ConfigHandle};
use crate::persistence::{ConfigState, ConfigStore};
use crate::server::Caller;

pub struct Registry {
    configs_dir: PathBuf,
    configs: DashMap<PathBuf, ConfigHandle>,
    /// Serialises first loads so two requests never bake the same config twice.
    loading: Mutex<()>,
}

/// Bakes a config off the async threads (Lua may run for up to a second).
pub async fn bake_blocking(
    path: PathBuf,
    sys_env: BTreeMap<String, String>,
) -> Result<Baked, ActorError> {
    tokio::task::spawn_blocking(move || config::bake(&path, &sys_env))
        .await
        .map_err(|e| ActorError::new(ErrorKind::Failed, format!("config baking crashed: {e}")))?
        .map_err(|errors| ActorError::new(ErrorKind::InvalidConfig, errors.to_string()))
}

/// Bakes with the caller's rights, in a limited worker process (in-process
/// only for root when no worker is configured, as in library tests).
pub async fn bake_for(
    caller: &Caller,
    path: &Path,
    sys_env: BTreeMap<String, String>,
) -> Result<Baked, ActorError> {
    if caller.is_root() && !crate::unprivileged_bake::worker_configured() {
        bake_blocking(path.to_path_buf(), sys_env).await
    } else {
        crate::unprivileged_bake::bake_as(caller, path, &sys_env).await
    }
}

impl Registry {
    pub fn new(configs_dir: PathBuf) -> Self {
        Registry {
            configs_dir,
            configs: DashMap::new(),
            loading: Mutex::new(()),
        }
    }

    pub fn configs_dir(&self) -> &Path {
        &self.configs_dir
    }

    /// Finds every config with a snapshot and starts its actor, resuming the
    /// services that were up. A config whose snapshot cannot be read is
    /// reported and skipped; it never stops the daemon.
    pub fn rediscover(&self) {
        let Ok(entries) = fs::read_dir(&self.configs_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let store = ConfigStore::at(entry.path());
            if !store.has_snapshot() {
                continue;
            }
            let config = match store.read_snapshot() {
                Ok(config) => config,
                Err(e) => {
                    tracing::error!("skipping config state {}: {e}", entry.path().display());
                    continue;
                }
            };
            let state = store.read_state().unwrap_or_default();
            let path = config.config_file.clone();
            tracing::info!(config = %path.display(), "found config");
            match config_actor::spawn(config, store, state, true) {
                Ok(handle) => {
                    self.configs.insert(path, handle);
                }
                Err(e) => tracing::error!("skipping {}: {e}", path.display()),
            }
        }
    }

    /// The actor of `config`, loading it on first reference: from its
    /// snapshot if it has one, else by baking it with `sys_env`. Without an
    /// environment nothing is baked: `None` means the config is not loaded.
    pub async fn get_or_load(
        &self,
        config: &ConfigRef,
        sys_env: Option<&SysEnv>,
        caller: &Caller,
    ) -> Result<Option<ConfigHandle>, ActorError> {
        if let Some(handle) = self.live(&config.path) {
            return Ok(Some(handle));
        }
        let store = ConfigStore::new(&self.configs_dir, &config.path);
        // Looking needs no lock: only a bake may wait for one.
        if sys_env.is_none() && !store.has_snapshot() {
            return Ok(None);
        }
        let _guard = self.loading.lock().await;
        if let Some(handle) = self.live(&config.path) {
            return Ok(Some(handle));
        }
        if !config.path.is_absolute() {
            return Err(ActorError::new(
                ErrorKind::NotFound,
                format!("config path {} is not absolute", config.path.display()),
            ));
        }
        let (baked_config, state) = if store.has_snapshot() {
            // Left by an actor that crashed: reuse the snapshot as it is.
            let snapshot = store
                .read_snapshot()
                .map_err(|e| ActorError::new(ErrorKind::Failed, e))?;
            (snapshot, store.read_state().unwrap_or_default())
        } else {
            let Some(sys_env) = sys_env else {
                return Ok(None);
            };
            let baked = bake_for(caller, &config.path, sys_env.clone()).await?;
            fs::create_dir_all(&self.configs_dir)
                .and_then(|()| store.write_bake(&baked))
                .map_err(|e| {
                    ActorError::new(
                        ErrorKind::Failed,
                        format!("cannot write state for {}: {e}", config.path.display()),
                    )
                })?;
            let state = ConfigState {
                owner_uid: caller.uid,
                ..Default::default()
            };
            (baked.config, state)
        };
        let handle = config_actor::spawn(baked_config, store, state, false)?;
        self.configs.insert(config.path.clone(), handle.clone());
        Ok(Some(handle))
    }

    /// A loaded config's actor, if it is alive.
    pub fn live(&self, path: &Path) -> Option<ConfigHandle> {
        let handle = self.configs.get(path)?.clone();
        if handle.is_alive() {
            Some(handle)
        } else {
            self.configs.remove(path);
            None
        }
    }

    /// Every loaded config, in path order.
    pub fn all(&self) -> Vec<ConfigHandle> {
        let mut handles: Vec<ConfigHandle> = self
            .configs
            .iter()
            .filter(|e| e.value().is_alive())
            .map(|e| e.value().clone())
            .collect();
        handles.sort_by(|a, b| a.path().cmp(b.path()));
        handles
    }

    /// Undoes a config (`stop --clean`): ends its actor (refused while any
    /// of its services is active) and removes its stored state (snapshot,
    /// state, logs), so the next reference bakes it afresh. Holds the load
    /// lock meanwhile, so no request finds the half-removed state.
    pub async fn forget(&self, handle: &ConfigHandle) -> Result<(), ActorError> {
        let _guard = self.loading.lock().await;
        handle.unload().await?;
        self.configs.remove(handle.path());
        handle.store().remove().map_err(|e| {
            ActorError::new(
                ErrorKind::Failed,
                format!(
                    "cannot remove the state of {} ({}): {e}",
                    handle.path().display(),
                    handle.store().root().display()
                ),
            )
        })
    }

    /// Forgets a config and ends its actor (prune).
    pub fn unload(&self, path: &Path) {
        if let Some((_, handle)) = self.configs.remove(path) {
            handle.close();
        }
    }
}
