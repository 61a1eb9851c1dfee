//! The registry of config actors: the only shared map in the daemon.
//!
//! A config is known by one name, the canonical path of its file (see
//! [`config_identity`](crate::config_identity)), and belongs to the owner of
//! that file. It is loaded on first reference: baked with its owner's rights
//! (never more), checked, written to its state directory, and given an
//! actor. A load holds a lock of its own path only, so a slow or hanging
//! bake of one config never delays another. On daemon start every config
//! with a snapshot is found again and its actor resumes what was running.
//!
//! Entries are never replaced while their actor lives, a second name for a
//! file already loaded (a hard link) is refused, and an entry is removed
//! only by whoever checked that it is the one to remove.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use kepler_protocol::{ConfigRef, ErrorKind, SysEnv};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::config::{self, Baked};
use crate::config_actor::{self, ActorError, ConfigHandle};
use crate::config_identity::{identify, ConfigIdentity};
use crate::persistence::{config_dir_name, ConfigState, ConfigStore};
use crate::server::Caller;
use crate::trusted_fs::TrustedDir;
use crate::unprivileged_bake::BakeAs;
use crate::user::ResolvedUser;

/// A held load lock of one path (see [`Registry::lock_path`]); the lock
/// itself is forgotten once nobody holds or waits for it.
pub struct PathLock<'a> {
    registry: &'a Registry,
    path: PathBuf,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for PathLock<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.registry
            .loading
            .remove_if(&self.path, |_, lock| Arc::strong_count(lock) == 1);
    }
}

pub struct Registry {
    configs_dir: Arc<TrustedDir>,
    configs: DashMap<PathBuf, ConfigHandle>,
    /// One lock per path being loaded, so a config is never baked twice and
    /// one config's bake never waits for another's.
    loading: DashMap<PathBuf, Arc<Mutex<()>>>,
}

/// What a member hears about a config it may not touch, whether or not
/// anyone loaded it: nothing that tells the two apart.
pub fn not_yours(path: &Path) -> ActorError {
    ActorError::new(
        ErrorKind::PermissionDenied,
        format!(
            "permission denied: config {} not found or not yours; members act only on configs \
             whose file they own",
            path.display()
        ),
    )
}

/// Whether `caller` may act on a config owned by `owner_uid`: root on every
/// config, anyone else on their own.
pub fn may_act(caller: &Caller, owner_uid: u32) -> bool {
    caller.is_root() || caller.uid == owner_uid
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

/// Bakes as `who` in a limited worker process (in-process only for root when
/// no worker is configured, as in library tests).
pub async fn bake_for(
    who: &BakeAs,
    path: &Path,
    sys_env: BTreeMap<String, String>,
) -> Result<Baked, ActorError> {
    let baked = if *who == BakeAs::Root && !crate::unprivileged_bake::worker_configured() {
        bake_blocking(path.to_path_buf(), sys_env).await?
    } else {
        crate::unprivileged_bake::bake_as(who, path, &sys_env).await?
    };
    if baked.config.config_file != path {
        return Err(ActorError::new(
            ErrorKind::Failed,
            format!(
                "the bake of {} answered for {} instead; refused",
                path.display(),
                baked.config.config_file.display()
            ),
        ));
    }
    Ok(baked)
}

/// A caller's own rights, for baking a config it owns.
pub fn rights_of(caller: &Caller) -> BakeAs {
    if caller.is_root() {
        return BakeAs::Root;
    }
    let mut groups = caller.groups.clone();
    if !groups.contains(&caller.gid) {
        groups.push(caller.gid);
    }
    BakeAs::User(ResolvedUser {
        uid: caller.uid,
        gid: caller.gid,
        supplementary: groups,
        name: None,
        home: None,
    })
}

/// Whose rights, and which environment, the first bake of a config owned by
/// `owner_uid` gets. The owner's own request bakes with its rights and
/// environment. Root loading a member's config bakes it exactly as the
/// member would, with the member's rights and login environment (`HOME`,
/// `USER`, `LOGNAME`, a default `PATH`), so neither root's rights nor root's
/// environment reach a member's config.
fn first_bake(
    caller: &Caller,
    owner_uid: u32,
    sys_env: &BTreeMap<String, String>,
) -> Result<(BakeAs, BTreeMap<String, String>), ActorError> {
    if caller.uid == owner_uid {
        return Ok((rights_of(caller), sys_env.clone()));
    }
    let owner = crate::user::resolve_user(&owner_uid.to_string(), None).map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!("cannot bake as the config file's owner (uid {owner_uid}): {e}"),
        )
    })?;
    let mut env: BTreeMap<String, String> = crate::user::identity_env(&owner).into_iter().collect();
    env.insert("PATH".into(), crate::process::DEFAULT_SEARCH_PATH.into());
    Ok((BakeAs::User(owner), env))
}

impl Registry {
    pub fn new(configs_dir: Arc<TrustedDir>) -> Self {
        Registry {
            configs_dir,
            configs: DashMap::new(),
            loading: DashMap::new(),
        }
    }

    /// `configs/`, held open.
    pub fn configs_dir(&self) -> &TrustedDir {
        &self.configs_dir
    }

    /// Finds every config with a snapshot and starts its actor, resuming the
    /// services that were up. A config whose state cannot be trusted or read
    /// is reported (which file, and why) and skipped; it never stops the
    /// daemon.
    pub fn rediscover(&self) {
        self.rediscover_adopting(std::collections::HashMap::new());
    }

    /// [`rediscover`](Self::rediscover), where the configs in `adoptions`
    /// take over the services a previous daemon handed over instead of
    /// recovering.
    pub fn rediscover_adopting(
        &self,
        mut adoptions: std::collections::HashMap<PathBuf, crate::upgrade::Adoption>,
    ) {
        let names = match self.configs_dir.entries() {
            Ok(names) => names,
            Err(e) => {
                tracing::error!("cannot list configs: {e}");
                return;
            }
        };
        for name in names {
            let store = match ConfigStore::open(&self.configs_dir, &name) {
                Ok(Some(store)) => store,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("skipping config state: {e}");
                    continue;
                }
            };
            let stored = match store.read_snapshot() {
                Ok(Some(stored)) => stored,
                // A bake that never finished left no snapshot.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("skipping config state: {e}");
                    continue;
                }
            };
            let path = stored.config.config_file.clone();
            if let Some(other) = self.same_file(&path, &stored.source) {
                tracing::error!(
                    "skipping config state {}: {} is the same file as {}, already loaded",
                    store.root().display(),
                    path.display(),
                    other.display()
                );
                continue;
            }
            let state = store.read_state().unwrap_or_default();
            let start = match adoptions.remove(&path) {
                Some(adoption) => {
                    tracing::info!(config = %path.display(), "resuming config");
                    config_actor::Resume::Adopt(Box::new(adoption))
                }
                None => {
                    tracing::info!(config = %path.display(), "found config");
                    config_actor::Resume::Recover(state.clone())
                }
            };
            match config_actor::spawn_with(stored, store, state, start) {
                Ok(handle) => {
                    if let Err(e) = self.insert(path.clone(), handle) {
                        tracing::error!("skipping {}: {}", path.display(), e.message);
                    }
                }
                Err(e) => tracing::error!("skipping {}: {e}", path.display()),
            }
        }
        for path in adoptions.into_keys() {
            tracing::error!(
                config = %path.display(),
                "was handed over but its state directory is gone; its processes are left alone"
            );
        }
    }

    /// The actor of `config`, loading it on first reference, if `caller`
    /// may act on it: from its snapshot if it has one, else by baking it
    /// with `sys_env`. Without an environment nothing is baked: `None` means
    /// the config is not loaded.
    ///
    /// Root naming a loaded config by its canonical path (what the CLI
    /// sends) is answered from the registry directly: root may act on every
    /// config, and the key is that config's one name. Everything else is
    /// resolved first.
    pub async fn get_or_load(
        &self,
        config: &ConfigRef,
        sys_env: Option<&SysEnv>,
        caller: &Caller,
    ) -> Result<Option<ConfigHandle>, ActorError> {
        if caller.is_root() {
            if let Some(handle) = self.live(&config.path) {
                return Ok(Some(handle));
            }
        }
        let identity = identify(caller, &config.path).await?;
        self.get_or_load_file(&identity, config, sys_env, caller)
            .await
    }

    /// [`Self::get_or_load`] for a file already resolved for `caller`.
    pub async fn get_or_load_file(
        &self,
        identity: &ConfigIdentity,
        config: &ConfigRef,
        sys_env: Option<&SysEnv>,
        caller: &Caller,
    ) -> Result<Option<ConfigHandle>, ActorError> {
        // Ownership first, so a refusal says the same whether the config is
        // loaded or not.
        if !may_act(caller, identity.owner_uid) {
            return Err(not_yours(&config.path));
        }
        let handle = match self.live(&identity.path) {
            Some(handle) => handle,
            None => {
                let _loading = self.lock_path(&identity.path).await;
                match self.load(identity, config, sys_env, caller).await? {
                    Some(handle) => handle,
                    None => return Ok(None),
                }
            }
        };
        if !may_act(caller, handle.owner_uid()) {
            return Err(not_yours(&config.path));
        }
        Ok(Some(handle))
    }

    /// Loads the config at `identity`, holding its path's lock.
    async fn load(
        &self,
        identity: &ConfigIdentity,
        config: &ConfigRef,
        sys_env: Option<&SysEnv>,
        caller: &Caller,
    ) -> Result<Option<ConfigHandle>, ActorError> {
        if let Some(handle) = self.live(&identity.path) {
            return Ok(Some(handle));
        }
        let failed = |message: String| ActorError::new(ErrorKind::Failed, message);
        let unusable = |e: String| {
            failed(format!(
                "the saved state of {} cannot be used: {e}; `kepler prune` (as root) removes it",
                identity.path.display()
            ))
        };
        let name = config_dir_name(&identity.path);
        let existing = ConfigStore::open(&self.configs_dir, name.as_ref())
            .map_err(|e| unusable(e.to_string()))?;
        let saved = match &existing {
            Some(store) => store.read_snapshot().map_err(unusable)?,
            None => None,
        };
        let (store, stored, state, resume) = match (existing, saved) {
            // Left by an actor that ended: resume from its saved state, but
            // only for someone who may act on it.
            (Some(store), Some(stored)) => {
                if !may_act(caller, stored.owner_uid) {
                    return Err(not_yours(&config.path));
                }
                let state = store.read_state().unwrap_or_default();
                (store, stored, state, true)
            }
            (existing, _) => {
                if let Some(other) = self.same_file(&identity.path, &identity.source) {
                    return Err(ActorError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{} is the same file as {}, which is already loaded; use that path",
                            identity.path.display(),
                            other.display()
                        ),
                    ));
                }
                // Looking never bakes: only requests that start carry an
                // environment.
                let Some(sys_env) = sys_env else {
                    return Ok(None);
                };
                let (who, sys_env) = first_bake(caller, identity.owner_uid, sys_env)?;
                let baked = bake_for(&who, &identity.path, sys_env).await?;
                // The file must still be the one whose owner was checked.
                let now = identify(caller, &identity.path).await?;
                if now != *identity {
                    return Err(ActorError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{} was replaced while it was being loaded; try again",
                            identity.path.display()
                        ),
                    ));
                }
                // State is written only for a config that baked.
                let cannot_write = |e: crate::trusted_fs::TrustError| {
                    failed(format!(
                        "cannot write state for {}: {e}",
                        identity.path.display()
                    ))
                };
                let store = match existing {
                    Some(store) => store,
                    None => ConfigStore::create(&self.configs_dir, &identity.path)
                        .map_err(cannot_write)?,
                };
                let stored = store
                    .write_bake(&baked, identity.owner_uid, identity.source)
                    .map_err(cannot_write)?;
                (store, stored, ConfigState::default(), false)
            }
        };
        if stored.config.config_file != identity.path {
            return Err(unusable(format!(
                "it holds the snapshot of {}",
                stored.config.config_file.display()
            )));
        }
        let handle = config_actor::spawn(stored, store, state, resume)?;
        self.insert(identity.path.clone(), handle.clone())?;
        Ok(Some(handle))
    }

    /// Holds `path`'s load lock until the guard is dropped: no load of that
    /// path runs meanwhile (prune holds it while it removes state).
    pub async fn lock_path(&self, path: &Path) -> PathLock<'_> {
        let lock = self.loading.entry(path.to_path_buf()).or_default().clone();
        PathLock {
            registry: self,
            path: path.to_path_buf(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Whether any config is being loaded right now.
    pub fn loads_in_progress(&self) -> bool {
        !self.loading.is_empty()
    }

    /// Adds an entry; one whose actor is alive is never replaced.
    fn insert(&self, path: PathBuf, handle: ConfigHandle) -> Result<(), ActorError> {
        match self.configs.entry(path) {
            Entry::Occupied(entry) if entry.get().is_alive() => {
                handle.close();
                Err(ActorError::new(
                    ErrorKind::Conflict,
                    format!("{} is already loaded", entry.key().display()),
                ))
            }
            Entry::Occupied(mut entry) => {
                entry.insert(handle);
                Ok(())
            }
            Entry::Vacant(entry) => {
                entry.insert(handle);
                Ok(())
            }
        }
    }

    /// The path of a loaded config, other than `path`, baked from the same
    /// file (device and inode).
    fn same_file(&self, path: &Path, source: &crate::persistence::SourceId) -> Option<PathBuf> {
        if *source == Default::default() {
            return None;
        }
        self.configs
            .iter()
            .find(|entry| entry.key() != path && entry.value().source() == *source)
            .map(|entry| entry.key().clone())
    }

    /// A loaded config's actor, if it is alive.
    pub fn live(&self, path: &Path) -> Option<ConfigHandle> {
        let handle = self.configs.get(path)?.clone();
        if handle.is_alive() {
            Some(handle)
        } else {
            self.configs
                .remove_if(path, |_, entry| entry.is_same(&handle));
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
    /// state, logs), so the next reference bakes it afresh. Holds the path's
    /// load lock meanwhile, so no request finds the half-removed state.
    pub async fn forget(&self, handle: &ConfigHandle) -> Result<(), ActorError> {
        let _loading = self.lock_path(handle.path()).await;
        handle.unload().await?;
        self.configs
            .remove_if(handle.path(), |_, entry| entry.is_same(handle));
        self.configs_dir
            .remove_tree(handle.store().name())
            .map_err(|e| {
                ActorError::new(
                    ErrorKind::Failed,
                    format!(
                        "cannot remove the state of {}: {e}",
                        handle.path().display()
                    ),
                )
            })
    }

    /// Forgets `handle` and ends its actor (prune), if it is still the entry
    /// for its path. Returns once the actor has ended, so its last state
    /// write cannot come after the caller removed the config's directory.
    pub async fn unload(&self, handle: &ConfigHandle) {
        if let Some((_, removed)) = self
            .configs
            .remove_if(handle.path(), |_, entry| entry.is_same(handle))
        {
            removed.close();
            removed.closed().await;
        }
    }
}
