//! A service's output: pipes pumped into the config's log store, drained
//! before an exit is recorded, and the retention policies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::unix::pipe;

use super::Orchestrator;
use crate::config::Retention;
use crate::logs::{
    self, HandoverSlot, LogSettings, LogSink, Origin, PumpHandle, Stream, GLOBAL_SERVICE,
};

/// How long a finished service's pipes may take to drain before its exit is
/// recorded anyway (a process that escaped its group can hold them open).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// When a retention policy applies.
#[derive(Debug, Clone, Copy)]
pub enum RetentionPoint {
    Start,
    Stop,
    Restart,
    Exit,
}

/// Waits for a service's pumps to reach the end of their pipes (bounded).
pub async fn drain(pumps: Vec<PumpHandle>) {
    let all = futures::future::join_all(pumps);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, all).await;
}

impl Orchestrator {
    /// The service's `logs:` settings as the log store takes them.
    pub(super) fn log_settings(&self, name: &str) -> LogSettings {
        let logs = match self.config.template(name) {
            Some(service) => &service.logs,
            None => &self.config.kepler.logs,
        };
        LogSettings {
            store_stdout: logs.store.stdout,
            store_stderr: logs.store.stderr,
            buffer_size: logs.buffer_size.bytes() as usize,
            max_size: logs.max_size.map(|s| s.bytes()),
        }
    }

    /// Where output of `service` (or of the config itself) written by
    /// `origin` goes.
    pub(super) fn sink(&self, service: Option<&str>, stream: Stream, origin: Origin) -> LogSink {
        let name = service.unwrap_or(GLOBAL_SERVICE);
        let settings = self.log_settings(name);
        self.logs.sink(name, stream, origin, &settings)
    }

    /// Starts pumping a new process's pipes into the store.
    pub(super) fn pump_output(
        &mut self,
        name: &str,
        stdout: Option<pipe::Receiver>,
        stderr: Option<pipe::Receiver>,
    ) {
        let mut pumps = Vec::with_capacity(2);
        let mut slots = Vec::with_capacity(2);
        for (stream, pipe) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
            let Some(pipe) = pipe else { continue };
            let sink = self.sink(Some(name), stream, Origin::Service);
            let slot: HandoverSlot = Arc::new(Mutex::new(None));
            pumps.push(logs::spawn_pump_with(
                pipe,
                sink,
                Vec::new(),
                Some(slot.clone()),
            ));
            slots.push((stream, slot));
        }
        self.pumps.insert(name.to_string(), pumps);
        self.pump_slots.insert(name.to_string(), slots);
    }

    pub(super) fn take_pumps(&mut self, name: &str) -> Vec<PumpHandle> {
        self.pump_slots.swap_remove(name);
        self.pumps.swap_remove(name).unwrap_or_default()
    }

    /// Clears the service's logs if its policy says so at `point`.
    pub(super) fn apply_retention(&self, name: &str, point: RetentionPoint) {
        let Some(service) = self.config.template(name) else {
            return;
        };
        let retention = &service.logs.retention;
        let policy = match point {
            RetentionPoint::Start => retention.on_start,
            RetentionPoint::Stop => retention.on_stop,
            RetentionPoint::Restart => retention.on_restart,
            RetentionPoint::Exit => retention.on_exit,
        };
        if policy == Retention::Clear {
            if let Err(e) = self.logs.clear(name) {
                tracing::warn!(service = name, "cannot clear logs: {e}");
            }
        }
    }

    /// Writes a line of Kepler's own into a service's log (e.g. why it was
    /// restarted), tagged so `--no-hook` hides it like hook output.
    pub(super) fn note(&self, name: &str, origin: &str, text: &str) {
        self.sink(Some(name), Stream::Stdout, Origin::Hook(origin.to_string()))
            .write_lines([text.as_bytes()]);
    }
}
