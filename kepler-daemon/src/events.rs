//! Events a config actor publishes: service state changes and output lines.
//!
//! Waiters (`--wait`, attached mode, log followers) subscribe to these
//! broadcasts instead of polling the actor.

use std::sync::Arc;

use kepler_protocol::{LogLine, ServiceStatus};
use tokio::sync::broadcast;

/// Lines a lagging subscriber may fall behind before it is told it lagged.
pub const CHANNEL_CAPACITY: usize = 65_536;

#[derive(Debug, Clone)]
pub struct StateChange {
    pub service: Arc<str>,
    pub status: ServiceStatus,
    pub reason: Option<String>,
    /// Settled for attached mode: not running, nothing scheduled.
    pub quiescent: bool,
    /// Will not change unless someone acts (given up, stopped by the user).
    pub settled: bool,
}

/// One item of a config's combined stream, in the order things happened.
#[derive(Debug, Clone)]
pub enum StreamItem {
    State(StateChange),
    Log(Arc<LogLine>),
}

/// The broadcasts of one config: state changes alone (for waiters), and
/// state changes interleaved with output (for attached mode and followers).
#[derive(Debug, Clone)]
pub struct ConfigEvents {
    pub states: broadcast::Sender<StateChange>,
    pub stream: broadcast::Sender<StreamItem>,
}

impl ConfigEvents {
    pub fn new() -> Self {
        ConfigEvents {
            states: broadcast::channel(CHANNEL_CAPACITY).0,
            stream: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }

    pub fn publish_state(&self, change: StateChange) {
        let _ = self.stream.send(StreamItem::State(change.clone()));
        let _ = self.states.send(change);
    }

    pub fn publish_log(&self, line: LogLine) {
        let _ = self.stream.send(StreamItem::Log(Arc::new(line)));
    }
}

impl Default for ConfigEvents {
    fn default() -> Self {
        Self::new()
    }
}
