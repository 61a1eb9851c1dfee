//! Events a config actor publishes: service state changes.
//!
//! Waiters (`--wait`, attached mode, log followers) subscribe to these
//! broadcasts instead of polling the actor.

use std::sync::Arc;

use kepler_protocol::ServiceStatus;
use tokio::sync::{broadcast, watch};

use crate::config::BakedConfig;

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
    /// When it happened, in microseconds since the epoch, to order state
    /// changes among log lines.
    pub at_us: u64,
}

/// Now, in microseconds since the epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The state-change broadcast of one config, and the snapshot it runs
/// (which `recreate` replaces); output is followed through the config's log
/// store.
#[derive(Debug, Clone)]
pub struct ConfigEvents {
    pub states: broadcast::Sender<StateChange>,
    pub snapshot: watch::Sender<Arc<BakedConfig>>,
}

impl ConfigEvents {
    pub fn new(config: Arc<BakedConfig>) -> Self {
        ConfigEvents {
            states: broadcast::channel(CHANNEL_CAPACITY).0,
            snapshot: watch::channel(config).0,
        }
    }

    pub fn publish_state(&self, change: StateChange) {
        let _ = self.states.send(change);
    }

    /// The snapshot the config runs now.
    pub fn config(&self) -> Arc<BakedConfig> {
        self.snapshot.borrow().clone()
    }
}
