//! Events a config actor publishes: service state changes.
//!
//! Waiters (`--wait`, attached mode, log followers) subscribe to these
//! broadcasts instead of polling the actor.

use std::sync::Arc;

use kepler_protocol::ServiceStatus;
use tokio::sync::{broadcast, watch};

use crate::config::BakedConfig;

/// State changes a subscriber may fall behind per service before it is told
/// it lagged: a start or restart of every service at once is a few changes
/// each, so this is many bursts of headroom.
const CHANGES_PER_SERVICE: usize = 16;
/// Bounds of a config's broadcast capacity. Its slots are allocated up
/// front (about 90 bytes each), so it grows with the config, not to the
/// largest config there could be.
const MIN_CAPACITY: usize = 1024;
const MAX_CAPACITY: usize = 65_536;

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
    /// Counts sampling ticks: `top` sends a frame after each.
    pub ticks: watch::Sender<u64>,
}

impl ConfigEvents {
    /// The broadcast of a config running `config`, sized by its number of
    /// services.
    pub fn new(config: Arc<BakedConfig>) -> Self {
        let capacity = config
            .services
            .len()
            .saturating_mul(CHANGES_PER_SERVICE)
            .clamp(MIN_CAPACITY, MAX_CAPACITY);
        ConfigEvents {
            states: broadcast::channel(capacity).0,
            snapshot: watch::channel(config).0,
            ticks: watch::channel(0).0,
        }
    }

    pub fn publish_state(&self, change: StateChange) {
        let _ = self.states.send(change);
    }

    /// Tells `top` subscribers that a sampling tick happened.
    pub fn publish_tick(&self) {
        self.ticks
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The snapshot the config runs now.
    pub fn config(&self) -> Arc<BakedConfig> {
        self.snapshot.borrow().clone()
    }
}
