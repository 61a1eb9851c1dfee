//! `kepler prune [--force] [--dry-run]`: remove the state of configs that
//! have nothing running. `--force` also stops running configs first.
//!
//! Each `configs/<hash>/` is judged by its own snapshot: whose config it is
//! (a member prunes only its own), which path it is for (the directory's
//! name must be that path's hash), and whether the loaded config of that
//! path is the one stored there. Only that directory is removed, while the
//! path's load lock is held, and never while any of its services runs.
//! State that cannot be read at all is root's to remove.

use std::ffi::OsString;

use kepler_protocol::{PrunedConfig, Response};

use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::orchestrator::StopIntentRequest;
use crate::persistence::ConfigStore;
use crate::registry::may_act;
use crate::state::StopIntent;

pub async fn handle(
    ctx: &RequestContext,
    force: bool,
    dry_run: bool,
) -> Result<Response, ActorError> {
    let registry = ctx.daemon.registry();
    let names = registry
        .configs_dir()
        .entries()
        .map_err(|e| ActorError::new(kepler_protocol::ErrorKind::Failed, e.to_string()))?;
    let mut report = Vec::new();
    for name in names {
        if let Some(entry) = prune_one(ctx, &name, force, dry_run).await? {
            report.push(entry);
        }
    }
    report.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Response::Pruned(report))
}

/// Judges and (unless `dry_run`) removes one config directory; `None` when
/// the caller may not see it.
async fn prune_one(
    ctx: &RequestContext,
    name: &OsString,
    force: bool,
    dry_run: bool,
) -> Result<Option<PrunedConfig>, ActorError> {
    let registry = ctx.daemon.registry();
    let configs = registry.configs_dir();
    let state_dir = configs.shown(name);
    let store = ConfigStore::open(configs, name);
    let stored = match &store {
        Ok(Some(store)) => store.read_snapshot(),
        Ok(None) => return Ok(None),
        Err(e) => Err(e.to_string()),
    };
    let stored = match stored {
        Ok(Some(stored)) => stored,
        // Unreadable state, or a directory without a snapshot: only root
        // prunes it, and only when no config in memory came from it.
        problem => {
            if !ctx.caller.is_root() || registry.loads_in_progress() {
                return Ok(None);
            }
            let note = match problem {
                Err(e) => format!("unreadable state ({e})"),
                _ => "incomplete state".to_string(),
            };
            let in_use = registry
                .all()
                .iter()
                .any(|h| h.store().root() == state_dir.as_path());
            return Ok(Some(remove_unreadable(
                ctx, name, state_dir, note, in_use, dry_run,
            )));
        }
    };
    let Ok(Some(store)) = store else {
        return Ok(None);
    };
    if !may_act(&ctx.caller, stored.owner_uid) {
        return Ok(None);
    }
    let path = stored.config.config_file.clone();
    let _loading = registry.lock_path(&path).await;
    // The loaded config of this path, if it is the one stored here.
    let handle: Option<ConfigHandle> = registry
        .live(&path)
        .filter(|h| h.store().name() == store.name());
    let running = running_count(handle.as_ref()).await;
    let mut entry = PrunedConfig {
        path: path.clone(),
        state_dir,
        note: String::new(),
        removed: false,
    };
    if running > 0 && !force {
        entry.note = format!("{running} service(s) running; stop them or use --force");
        return Ok(Some(entry));
    }
    if dry_run {
        // In a dry run, `removed` says what a real run would remove.
        entry.removed = true;
        entry.note = if running > 0 {
            format!("would stop {running} service(s) and remove")
        } else {
            "would remove".into()
        };
        return Ok(Some(entry));
    }
    if let Some(handle) = &handle {
        if running > 0 {
            let request = StopIntentRequest {
                signal: None,
                intent: StopIntent::User,
            };
            handle.stop(Vec::new(), request).await?;
        }
        // A handle whose services still run is never dropped.
        let still = running_count(Some(handle)).await;
        if still > 0 {
            entry.note = format!("{still} service(s) still running; not removed");
            return Ok(Some(entry));
        }
        registry.unload(handle).await;
    }
    match configs.remove_tree(name) {
        Ok(()) => {
            entry.removed = true;
            entry.note = "removed".into();
        }
        Err(e) => entry.note = format!("cannot remove: {e}"),
    }
    Ok(Some(entry))
}

/// Services running or starting, counting an actor that does not answer as
/// busy (never removed on a guess).
async fn running_count(handle: Option<&ConfigHandle>) -> usize {
    match handle {
        Some(handle) => handle.summary().await.map_or(1, |s| s.running),
        None => 0,
    }
}

fn remove_unreadable(
    ctx: &RequestContext,
    name: &OsString,
    state_dir: std::path::PathBuf,
    note: String,
    in_use: bool,
    dry_run: bool,
) -> PrunedConfig {
    let mut entry = PrunedConfig {
        path: state_dir.join("(unknown config)"),
        state_dir,
        note: note.clone(),
        removed: false,
    };
    if in_use {
        entry.note = format!("{note}; in use, not removed");
    } else if dry_run {
        entry.removed = true;
        entry.note = format!("{note}; would remove");
    } else {
        match ctx.daemon.registry().configs_dir().remove_tree(name) {
            Ok(()) => {
                entry.removed = true;
                entry.note = format!("{note}; removed");
            }
            Err(e) => entry.note = format!("{note}; cannot remove: {e}"),
        }
    }
    entry
}
