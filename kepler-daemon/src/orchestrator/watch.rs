//! Restart on file change: one watcher per service with `restart.watch`,
//! from its first start until the user stops it.

use super::Orchestrator;
use crate::state::StopIntent;
use crate::watcher::{self, WatchEvent, WatchSpec, DEFAULT_DEBOUNCE};

/// Changed paths named in the restart note, at most.
const NAMED_PATHS: usize = 3;

impl Orchestrator {
    pub(super) fn ensure_watch(&mut self, name: &str) {
        if self.watches.contains_key(name) {
            return;
        }
        let service = &self.config.services[name];
        if service.restart.watch.is_empty() {
            return;
        }
        // Kepler's own state (logs included) must never trigger a restart.
        let state_dir = self
            .store
            .root()
            .parent()
            .and_then(|configs| configs.parent())
            .map(|p| p.to_path_buf());
        let spec = WatchSpec {
            service: name.to_string(),
            root: service.working_dir.clone(),
            patterns: service.restart.watch.clone(),
            ignore: state_dir.into_iter().collect(),
        };
        match watcher::watch(spec, DEFAULT_DEBOUNCE, self.channels.watch.clone()) {
            Ok(handle) => {
                self.watches.insert(name.to_string(), handle);
            }
            Err(e) => {
                tracing::error!(service = name, "file watching not started: {e}");
                self.note(name, "watch", &format!("file watching not started: {e}"));
            }
        }
    }

    pub(super) fn stop_watch(&mut self, name: &str) {
        self.watches.remove(name);
    }

    pub fn on_files_changed(&mut self, mut event: WatchEvent) {
        let name = event.service.clone();
        if !self.watches.contains_key(&name) {
            return;
        }
        // The watcher runs as root; a non-root owner learns only of changes
        // in directories it could list itself.
        if self.owner_uid != 0 {
            let owner = match crate::user::resolve_user(&self.owner_uid.to_string(), None) {
                Ok(owner) => owner,
                Err(_) => return,
            };
            event
                .paths
                .retain(|path| owner_can_list_dirs_of(&owner, path));
            if event.paths.is_empty() {
                return;
            }
        }
        let Some(runtime) = self.services.get(&name) else {
            return;
        };
        let root = &self.config.services[&name].working_dir;
        let mut named: Vec<String> = event
            .paths
            .iter()
            .take(NAMED_PATHS)
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect();
        let more = event.paths.len().saturating_sub(NAMED_PATHS) + event.omitted;
        if more > 0 {
            named.push(format!("{more} more"));
        }
        let why = format!("files changed ({}); restarting", named.join(", "));
        tracing::info!(service = %name, "{why}");
        self.note(&name, "watch", &why);
        if runtime.pid.is_some() {
            let mut set = vec![name.clone()];
            set.extend(self.restart_dependents(&name));
            self.stop_all_of(&set, None, StopIntent::Restart);
        } else if runtime.stop.is_none() {
            self.begin_start(&name);
        }
        if let Some(runtime) = self.services.get_mut(&name) {
            runtime.reason = Some(format!("restarted: {}", named.join(", ")));
        }
    }
}

/// True if every directory above `path` can be searched and read by `user`,
/// judged from mode bits, owner and group as the kernel would.
fn owner_can_list_dirs_of(user: &crate::user::ResolvedUser, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).all(|dir| {
        let Ok(meta) = std::fs::metadata(dir) else {
            return false;
        };
        let mode = meta.mode();
        let bits = if meta.uid() == user.uid {
            mode >> 6
        } else if meta.gid() == user.gid || user.supplementary.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & 0o5 == 0o5
    })
}
