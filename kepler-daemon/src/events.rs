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

/// The two broadcasts of one config.
#[derive(Debug, Clone)]
pub struct ConfigEvents {
    pub states: broadcast::Sender<StateChange>,
    pub logs: broadcast::Sender<Arc<LogLine>>,
}

impl ConfigEvents {
    pub fn new() -> Self {
        ConfigEvents {
            states: broadcast::channel(CHANNEL_CAPACITY).0,
            logs: broadcast::channel(CHANNEL_CAPACITY).0,
        }
    }
}

impl Default for ConfigEvents {
    fn default() -> Self {
        Self::new()
    }
}
