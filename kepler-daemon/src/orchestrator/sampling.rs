//! The config's sampling tick: what every running service uses, kept as the
//! latest usage (for `top` and the metrics endpoint) and appended to the
//! config's history as one row.

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

    /// Samples every running service at once (one read per cgroup, or one
    /// pass over /proc), updates what each used last, appends a row to the
    /// history if anything runs, and tells `top` subscribers.
    pub fn sample_tick(&mut self) {
        let names: Vec<&String> = self.config.services.keys().collect();
        let scopes: Vec<Option<&Scope>> = names
            .iter()
            .map(|name| self.services.get(*name).and_then(|s| s.scope.as_ref()))
            .collect();
        let running: Vec<&Scope> = scopes.iter().flatten().copied().collect();
        if running.is_empty() {
            return;
        }
        let mut sampled = metrics::sample(&running).into_iter();
        let usages: Vec<_> = scopes
            .iter()
            .map(|scope| scope.and_then(|_| sampled.next().flatten()))
            .collect();
        let now = Instant::now();
        let names: Vec<String> = names.into_iter().cloned().collect();
        let mut row = Vec::with_capacity(names.len());
        for (name, usage) in names.iter().zip(usages) {
            let runtime = self
                .services
                .get_mut(name)
                .expect("a service of the config");
            let Some(usage) = usage else {
                row.push(None);
                continue;
            };
            let started = runtime.started_at.unwrap_or(now);
            let cpu_percent = runtime
                .cpu
                .get_or_insert_with(|| CpuRate::since(started))
                .update(now, usage.cpu_usec);
            runtime.usage = Some(usage);
            row.push(Some(Sample {
                cpu_percent,
                memory_bytes: usage.memory_bytes,
                restarts: runtime.restarts,
            }));
        }
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
