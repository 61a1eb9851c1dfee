//! What the observing requests answer: `stats` (usage over a window),
//! `inspect` (a config and its services in full) and `top` (frames pushed
//! while the client watches).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::response::ServiceInfo;

/// `kepler stats`: usage of a config's services over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigStats {
    pub path: PathBuf,
    /// Time between samples; 0 when sampling is off for the config.
    pub interval_ms: u64,
    pub retention_ms: u64,
    /// Start of the window, in milliseconds since the epoch.
    pub since_ms: u64,
    pub services: Vec<ServiceStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    /// Samples in the window taken while the service ran.
    pub samples: u64,
    /// Percent of one CPU.
    pub cpu_percent: Option<Spread>,
    pub memory_bytes: Option<Spread>,
    /// Restarts counted between the samples of the window.
    pub restarts: u32,
    /// When the oldest sample of the window was taken (ms since the epoch).
    pub first_at_ms: Option<u64>,
    pub last: Option<LastSample>,
}

/// Least, mean and most of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastSample {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// `kepler inspect`: the config and each service, baked settings and
/// runtime state. Field names are part of the documented JSON output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigInspection {
    pub path: PathBuf,
    /// Name of the config's directory in the state directory.
    pub hash: String,
    pub state_dir: PathBuf,
    pub owner_uid: u32,
    /// Whether the services' environments are included (the caller is the
    /// config's owner or root).
    pub environment_shown: bool,
    pub services: Vec<ServiceInspection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInspection {
    pub name: String,
    /// The baked settings as JSON text (without `environment` when it is
    /// not shown).
    pub config_json: String,
    pub status: String,
    pub pid: Option<u32>,
    /// When the current process started, in milliseconds since the epoch.
    pub started_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    /// The signal that ended the last process, when one did.
    pub exit_signal: Option<String>,
    pub restarts: u32,
    pub reason: Option<String>,
    pub health: Option<HealthInspection>,
    pub cgroup: Option<PathBuf>,
    /// The process environment, when shown.
    pub environment: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthInspection {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub consecutive_failures: u32,
    /// What the last failed probe said; `None` after a success.
    pub last_output: Option<String>,
}

/// One update of `kepler top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopFrame {
    /// Sent because a sampling tick happened: CPU and memory are new
    /// samples (the client adds them to its sparklines).
    pub sampled: bool,
    pub configs: Vec<TopConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopConfig {
    pub path: PathBuf,
    pub services: Vec<ServiceInfo>,
    /// Recent samples per service, oldest first; in the first frame only.
    pub history: Vec<ServiceHistory>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceHistory {
    pub name: String,
    /// `None` where the service did not run at that tick.
    pub cpu_percent: Vec<Option<f32>>,
    pub memory_bytes: Vec<Option<u64>>,
}
