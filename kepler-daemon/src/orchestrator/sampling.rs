//! The config's sampling tick: what every running service uses, kept as the
//! latest usage (for `top` and the metrics endpoint) and appended to the
//! config's history as one row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Orchestrator;
use crate::metrics::history::{HistoryWriter, Layout, Sample, HISTORY_FILE};
use crate::metrics::{self, CpuRate};
use crate::process::Scope;

/// The history file as the actor holds it.
pub(super) enum History {
    /// Not opened yet (or the config changed since).
    Closed,
    Open(HistoryWriter),
    /// Opening or writing failed; logged once, tried again after a recreate.
    Failed,
}

impl Orchestrator {
    /// Time between sampling ticks; `None` when sampling is off.
    pub fn sampling_interval(&self) -> Option<Duration> {
        let metrics = self.config.kepler.metrics;
        metrics.enabled().then_some(metrics.interval.0)
    }

    /// Samples every running instance at once (one read per cgroup, or one
    /// pass over /proc), updates what each used last, appends a row to the
    /// history if anything runs, and tells `top` subscribers. The history
    /// has a column per service, not per instance (`kepler scale` changes
    /// instances, and must not start a new history): a replicated service's
    /// column is the sum of its instances.
    pub fn sample_tick(&mut self) {
        let running: Vec<(String, Scope)> = self
            .services
            .iter()
            .filter_map(|(name, runtime)| Some((name.clone(), runtime.scope.clone()?)))
            .collect();
        if running.is_empty() {
            return;
        }
        let scopes: Vec<&Scope> = running.iter().map(|(_, scope)| scope).collect();
        let sampled = metrics::sample(&scopes);
        let now = Instant::now();
        let mut per_service: HashMap<Arc<str>, Sample> = HashMap::new();
        for ((name, _), usage) in running.iter().zip(sampled) {
            let Some(usage) = usage else { continue };
            let Some(runtime) = self.services.get_mut(name) else {
                continue;
            };
            let started = runtime.started_at.unwrap_or(now);
            let cpu_percent = runtime
                .cpu
                .get_or_insert_with(|| CpuRate::since(started))
                .update(now, usage.cpu_usec);
            runtime.usage = Some(usage);
            let column = per_service
                .entry(runtime.service.clone())
                .or_insert(Sample {
                    cpu_percent: 0.0,
                    memory_bytes: 0,
                    restarts: 0,
                });
            column.cpu_percent += cpu_percent;
            column.memory_bytes += usage.memory_bytes;
        }
        // Restarts of every instance, running or not, so that one that is
        // down between two ticks still counts.
        for runtime in self.services.values() {
            if let Some(column) = per_service.get_mut(&runtime.service) {
                column.restarts = column.restarts.saturating_add(runtime.restarts);
            }
        }
        let names: Vec<String> = self.config.services.keys().cloned().collect();
        let row: Vec<Option<Sample>> = names
            .iter()
            .map(|name| per_service.get(name.as_str()).copied())
            .collect();
        self.record(&names, &row);
        self.events.publish_tick();
    }

    /// Appends the tick to the history, opening it on first use.
    fn record(&mut self, names: &[String], row: &[Option<Sample>]) {
        if let super::History::Closed = self.history {
            self.history = self.open_history(names);
        }
        let super::History::Open(writer) = &mut self.history else {
            return;
        };
        if let Err(e) = writer.append(crate::events::now_us() / 1000, row) {
            tracing::error!(
                config = %self.config.config_file.display(),
                "cannot write the usage history: {e}; sampling goes on without it"
            );
            self.history = History::Failed;
        }
    }

    fn open_history(&self, names: &[String]) -> History {
        let Some(layout) = Layout::of(
            names.iter().map(String::as_str),
            &self.config.kepler.metrics,
        ) else {
            return History::Failed;
        };
        let opened = self
            .store
            .open_update(HISTORY_FILE)
            .map_err(std::io::Error::from)
            .and_then(|file| HistoryWriter::open(file, layout));
        match opened {
            Ok(writer) => History::Open(writer),
            Err(e) => {
                tracing::error!(
                    config = %self.config.config_file.display(),
                    "cannot open the usage history: {e}; sampling goes on without it"
                );
                History::Failed
            }
        }
    }
}
