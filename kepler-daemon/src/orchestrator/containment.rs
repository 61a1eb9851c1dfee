//! Where a config's processes run and what they may use: the config's
//! cgroup, each service's cgroup with its limits written, the notes about
//! limits that cannot be enforced as configured, and usage for `ps`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kepler_protocol::ServiceInfo;

use super::Orchestrator;
use crate::config::BakedConfig;
use crate::containment::{self, plan_limits, tree::remove_tree, Cgroup, ConfigCgroup, LimitPlan};
use crate::metrics::{self, CpuRate};

/// Where a note about limits appears in a service's log (as a hook would).
const NOTE_ORIGIN: &str = "kepler";

/// Per service, the notes [`plan_limits`] makes for its `limits:` under the
/// daemon's containment.
pub(super) fn limit_notes(config: &BakedConfig) -> BTreeMap<String, Vec<String>> {
    let containment = containment::current();
    config
        .services
        .iter()
        .map(|(name, service)| {
            (
                name.clone(),
                plan_limits(&service.limits, containment).notes,
            )
        })
        .filter(|(_, notes)| !notes.is_empty())
        .collect()
}

impl Orchestrator {
    /// The config's cgroup, created on first use; `None` in process-group
    /// mode.
    pub(super) fn config_cgroup(&mut self) -> Result<Option<ConfigCgroup>, String> {
        let Some(tree) = containment::current().tree() else {
            return Ok(None);
        };
        if let Some(cgroup) = &self.cgroup {
            return Ok(Some(cgroup.clone()));
        }
        let hash = self.config_hash();
        let cgroup = tree.config(&hash).map_err(|e| {
            format!(
                "cannot create the config's cgroup {}/{hash}: {e}",
                tree.root().display()
            )
        })?;
        self.cgroup = Some(cgroup.clone());
        Ok(Some(cgroup))
    }

    /// The config's cgroup as a previous daemon left it, if it did.
    pub fn leftover_cgroup(&self) -> Option<Cgroup> {
        containment::current()
            .tree()?
            .existing_config(&self.config_hash())
    }

    /// Removes the config's cgroup when the actor ends (after `prune`);
    /// only what is empty goes.
    pub fn remove_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            remove_tree(&Cgroup::at(cgroup.dir().to_path_buf()));
        }
    }

    /// `configs/<hash>`'s hash, which also names the config's cgroup.
    fn config_hash(&self) -> String {
        self.store
            .root()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// How `name`'s limits apply under the daemon's containment.
    pub(super) fn limit_plan(&self, name: &str) -> LimitPlan {
        plan_limits(&self.settings(name).limits, containment::current())
    }

    /// The service's own cgroup with `plan`'s limits written (`None` in
    /// process-group mode). A limit the kernel refuses is noted, not fatal:
    /// the service runs, and its log and `daemon status` say what is not
    /// enforced.
    pub(super) fn service_cgroup(
        &mut self,
        name: &str,
        plan: &LimitPlan,
    ) -> Result<Option<Arc<Cgroup>>, String> {
        let Some(config) = self.config_cgroup()? else {
            return Ok(None);
        };
        let cgroup = config.service(name).map_err(|e| {
            format!(
                "cannot create its cgroup in {}: {e}",
                config.dir().display()
            )
        })?;
        let swap_configured = self.settings(name).limits.swap.is_some();
        for (write, error) in cgroup.apply_limits(&plan.cgroup) {
            // Without swap accounting there is no memory.swap.max; the
            // default of no swap only matters when swap was asked for.
            if write.file == "memory.swap.max" && !swap_configured {
                continue;
            }
            let note = format!(
                "{} is not enforced: the kernel refused {} = {} in {}: {error}",
                write.key,
                write.file,
                write.value,
                cgroup.dir().display()
            );
            self.add_limit_note(name, note);
        }
        Ok(Some(cgroup))
    }

    /// Records a note found while starting `name` (kept per service: its
    /// instances share their limits) and writes it to its log.
    fn add_limit_note(&mut self, name: &str, note: String) {
        let service = self.service_of(name);
        let notes = self.limit_notes.entry(service).or_default();
        if notes.contains(&note) {
            return;
        }
        notes.push(note.clone());
        tracing::warn!(service = name, "{note}");
        if self.limits_logged.contains(name) {
            self.note(name, NOTE_ORIGIN, &note);
        }
    }

    /// At an instance's first start in this daemon, its log says which of
    /// its service's limits are not enforced and why.
    pub(super) fn log_limit_notes_once(&mut self, name: &str) {
        if !self.limits_logged.insert(name.to_string()) {
            return;
        }
        let service = self.service_of(name);
        for note in self.limit_notes.get(&service).cloned().unwrap_or_default() {
            self.note(name, NOTE_ORIGIN, &note);
        }
    }

    /// The service `name` is an instance of.
    fn service_of(&self, name: &str) -> String {
        self.services
            .get(name)
            .map_or_else(|| name.to_string(), |s| s.service.to_string())
    }

    /// Every limit note of the config, naming config and service, for
    /// `kepler daemon status`.
    pub fn limit_notes(&self) -> Vec<String> {
        let config = self.config.config_file.display().to_string();
        let config = &config;
        self.limit_notes
            .iter()
            .flat_map(|(service, notes)| {
                notes
                    .iter()
                    .map(move |note| format!("{config}: {service}: {note}"))
            })
            .collect()
    }

    /// Service states in name order with what the running ones use now, for
    /// `ps`. Sampling happens here, only when asked: one read of each
    /// cgroup's files, or one pass over /proc for all process groups.
    pub fn ps_infos(&mut self) -> Vec<ServiceInfo> {
        // Instances of a service by number: web.2 before web.10.
        let mut names: Vec<String> = self.services.keys().cloned().collect();
        names.sort_by_key(|name| {
            let runtime = &self.services[name];
            (runtime.service.clone(), runtime.replica, name.clone())
        });
        let running: Vec<(String, crate::process::Scope)> = names
            .iter()
            .filter_map(|name| {
                let scope = self.services[name].scope.clone()?;
                Some((name.clone(), scope))
            })
            .collect();
        let scopes: Vec<&crate::process::Scope> = running.iter().map(|(_, s)| s).collect();
        let samples = metrics::sample(&scopes);
        let now = Instant::now();
        let mut usage = BTreeMap::new();
        for ((name, _), sample) in running.iter().zip(samples) {
            let Some(sample) = sample else { continue };
            if let Some(runtime) = self.services.get_mut(name) {
                let started = runtime.started_at.unwrap_or(now);
                runtime
                    .cpu
                    .get_or_insert_with(|| CpuRate::since(started))
                    .update(now, sample.cpu_usec);
            }
            usage.insert(name.as_str(), sample);
        }
        names
            .iter()
            .map(|name| {
                self.services[name].info_with_usage(name, usage.get(name.as_str()).copied())
            })
            .collect()
    }
}
