//! Restart on file change: one watch per service with `restart.watch`,
//! from its first successful spawn until it is stopped by the user or
//! fails. The daemon's one file watcher looks at the files as the service's
//! user, so a watch never shows a service more than its user could see.

use super::Orchestrator;
use crate::state::StopIntent;
use crate::state_dir::written_by_kepler;
use crate::watcher::{FsIdentity, WatchEvent, WatchHub, WatchReport, WatchSpec, DEFAULT_DEBOUNCE};

/// Changed paths named in the restart note, at most.
const NAMED_PATHS: usize = 3;

impl Orchestrator {
    /// Watches a service that was just spawned, unless it already is.
    pub(super) fn ensure_watch(&mut self, name: &str) {
        let watched = self
            .config
            .template(name)
            .is_some_and(|s| !s.restart.watch.is_empty());
        if self.watches.contains_key(name) || !watched {
            return;
        }
        let identity = match self.service_user(name) {
            Ok(user) => user.map(|user| FsIdentity {
                uid: user.uid,
                gid: user.gid,
                groups: user.supplementary,
            }),
            Err(e) => {
                self.note(name, "watch", &format!("file watching not started: {e}"));
                return;
            }
        };
        // Only what Kepler itself writes is ignored (a project may well
        // live inside the state directory): configs/<hash>/ holds this
        // config's logs, the rest is the daemon's own.
        let ignore = self
            .store
            .root()
            .parent()
            .and_then(|configs| configs.parent())
            .map(written_by_kepler)
            .unwrap_or_default();
        let Some(service) = self.config.template(name) else {
            return;
        };
        let spec = WatchSpec {
            service: name.to_string(),
            root: service.working_dir.clone(),
            patterns: service.restart.watch.clone(),
            ignore,
            identity,
        };
        let watched = WatchHub::shared()
            .and_then(|hub| hub.watch(spec, DEFAULT_DEBOUNCE, self.channels.watch.clone()));
        match watched {
            Ok(handle) => {
                self.watches.insert(name.to_string(), handle);
            }
            Err(e) => {
                tracing::error!(service = name, "file watching not started: {e}");
                self.note(name, "watch", &format!("file watching not started: {e}"));
            }
        }
    }

    /// Releases a service's watch (stopped by the user, or failed).
    pub(super) fn stop_watch(&mut self, name: &str) {
        self.watches.remove(name);
    }

    pub fn on_watch_report(&mut self, report: WatchReport) {
        match report {
            WatchReport::Changed(event) => self.on_files_changed(event),
            WatchReport::Note {
                service,
                watch,
                text,
            } => {
                if self.is_current_watch(&service, watch) {
                    self.note(&service, "watch", &text);
                }
            }
        }
    }

    /// Whether `watch` is the service's current watch (not one released
    /// before it was started again).
    fn is_current_watch(&self, service: &str, watch: u64) -> bool {
        self.watches
            .get(service)
            .is_some_and(|handle| handle.id() == watch)
    }

    fn on_files_changed(&mut self, event: WatchEvent) {
        let name = event.service.clone();
        if !self.is_current_watch(&name, event.watch) {
            return;
        }
        let Some(runtime) = self.services.get(&name) else {
            return;
        };
        let Some(root) = self.config.template(&name).map(|s| &s.working_dir) else {
            return;
        };
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
        if event.missed_events {
            named.push("possibly others (the kernel's event queue overflowed)".into());
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
