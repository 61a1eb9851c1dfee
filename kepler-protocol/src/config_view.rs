//! The baked config as `kepler-daemon check --json FILE` prints it for
//! `kepler export`: a small, stable JSON view, separate from the daemon's
//! snapshot format, so exporters do not depend on how the daemon stores
//! configs. Both binaries come from one build; `version` guards against a
//! mismatched pair.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or disappears.
pub const CONFIG_VIEW_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    pub version: u32,
    /// Absolute path of the config file.
    pub config_file: PathBuf,
    pub services: BTreeMap<String, ServiceView>,
    /// Names of the global hooks the config has (`pre_start`, ...).
    pub global_hooks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    /// The final environment, values expanded and env files read.
    pub environment: BTreeMap<String, String>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// The numeric identity, when the user and group resolve on this machine.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub depends_on: BTreeMap<String, DependencyView>,
    pub restart: RestartView,
    pub healthcheck: Option<HealthcheckView>,
    /// By hook name (`pre_start`, `post_stop`, ...).
    pub hooks: BTreeMap<String, HookView>,
    pub limits: LimitsView,
    /// A signal name like `SIGTERM`.
    pub stop_signal: String,
    pub stop_grace_period_ms: u64,
    /// `replicas:` as written: how many instances run (`name.1` …); unset,
    /// one process named after the service.
    #[serde(default)]
    pub replicas: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyView {
    /// `service_started`, `service_healthy`, `service_completed_successfully`,
    /// `service_unhealthy`, `service_failed` or `service_stopped`.
    pub condition: String,
    pub timeout_ms: Option<u64>,
    pub restart: bool,
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartView {
    /// `no`, `always` or `on-failure`.
    pub policy: String,
    pub watch: Vec<String>,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthcheckView {
    pub probe: ProbeView,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeView {
    /// Healthy when this argv exits 0.
    Command(Vec<String>),
    /// Healthy on a 2xx answer to `GET` of this `http://` URL.
    Http(String),
    /// Healthy when a TCP connection to `host:port` opens.
    Tcp(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookView {
    /// The argv the hook runs (a `run:` script is `sh -c script`).
    pub command: Vec<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub working_dir: PathBuf,
    pub environment: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    /// Memory of the whole service, in bytes (`memory.max` with cgroups,
    /// address space per process without).
    pub memory_bytes: Option<u64>,
    /// Swap of the whole service, in bytes; with `memory_bytes` set and this
    /// unset, the service gets no swap.
    #[serde(default)]
    pub swap_bytes: Option<u64>,
    /// CPU bandwidth in thousandths of a CPU (`cpu.max`).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// Processes and threads at once (`pids.max`).
    #[serde(default)]
    pub pids: Option<u64>,
    /// Relative block I/O weight, 1-10000 (`io.weight`).
    #[serde(default)]
    pub io_weight: Option<u16>,
    /// CPU seconds (RLIMIT_CPU).
    pub cpu_time_secs: Option<u64>,
    /// Open files (RLIMIT_NOFILE).
    pub max_fds: Option<u64>,
}
