//! `kepler prune [--force] [--dry-run]`: remove the state of configs that
//! have nothing running. `--force` also stops running configs first.

use std::fs;

use kepler_protocol::{PrunedConfig, Response};

use super::config_access::ensure_owner;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::orchestrator::StopIntentRequest;
use crate::persistence::ConfigStore;
use crate::state::StopIntent;

pub async fn handle(
    ctx: &RequestContext,
    force: bool,
    dry_run: bool,
) -> Result<Response, ActorError> {
    let registry = ctx.daemon.registry();
    let mut report = Vec::new();
    let Ok(entries) = fs::read_dir(registry.configs_dir()) else {
        return Ok(Response::Pruned(report));
    };
    for entry in entries.flatten() {
        let store = ConfigStore::at(entry.path());
        let path = store
            .read_source_path()
            .unwrap_or_else(|| entry.path().join("(unknown source)"));
        let handle = registry.live(&path);
        if let Some(handle) = &handle {
            if ensure_owner(ctx, handle).is_err() {
                continue;
            }
        } else if !ctx.caller.is_root() {
            // Unloaded state has no recorded owner at hand; only root prunes it.
            continue;
        }
        let running = match &handle {
            Some(handle) => handle.summary().await.map_or(0, |s| s.running),
            None => 0,
        };
        let mut entry = PrunedConfig {
            path: path.clone(),
            state_dir: store.root().to_path_buf(),
            note: String::new(),
            removed: false,
        };
        if running > 0 && !force {
            entry.note = format!("{running} service(s) running; stop them or use --force");
            report.push(entry);
            continue;
        }
        if dry_run {
            // In a dry run, `removed` says what a real run would remove.
            entry.removed = true;
            entry.note = if running > 0 {
                format!("would stop {running} service(s) and remove")
            } else {
                "would remove".into()
            };
            report.push(entry);
            continue;
        }
        if let Some(handle) = &handle {
            if running > 0 {
                let request = StopIntentRequest {
                    signal: None,
                    intent: StopIntent::User,
                };
                handle.stop(Vec::new(), request).await?;
            }
            registry.unload(&path).await;
        }
        match store.remove() {
            Ok(()) => {
                entry.removed = true;
                entry.note = "removed".into();
            }
            Err(e) => entry.note = format!("cannot remove: {e}"),
        }
        report.push(entry);
    }
    report.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Response::Pruned(report))
}
