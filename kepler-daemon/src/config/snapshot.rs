//! The baked config: the immutable snapshot the daemon runs from.
//!
//! Everything here is resolved: variables expanded, Lua results substituted,
//! defaults filled, paths absolute, and each service's and hook's final
//! process environment computed. It is stored as JSON (`snapshot.json`,
//! values in their human forms `10s`, `50M`, `SIGTERM`) and read back
//! unchanged; `expanded_config.yaml` renders it for people.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::snapshot_check::{check_snapshot, SnapshotProblems, MAX_SNAPSHOT_BYTES};
use super::values::{
    ByteSize, CpuCount, ExitCodeFilter, GroupSpec, HumanDuration, StopSignal, Umask, UserSpec,
};
use crate::env::SysEnvPolicy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BakedConfig {
    /// Absolute path of the config file the snapshot was baked from.
    pub config_file: PathBuf,
    pub kepler: GlobalConfig,
    /// The top-level `lua:` block, kept for reference; it already ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lua: Option<String>,
    pub services: BTreeMap<String, ServiceConfig>,
}

impl BakedConfig {
    /// The log settings of a service or instance; anything else (global
    /// hook output) uses `kepler.logs`.
    pub fn log_config(&self, service: &str) -> &LogConfig {
        self.template(service)
            .map_or(&self.kepler.logs, |s| &s.logs)
    }

    /// What a name the daemon runs stands for: a service (`web`, no replica
    /// number) or an instance of a replicated one (`web.3` is `web`, 3).
    /// A config never has a service named like an instance of another.
    pub fn instance_of<'a>(&self, name: &'a str) -> Option<(&'a str, Option<u32>)> {
        if self.services.contains_key(name) {
            return Some((name, None));
        }
        let (service, replica) = super::values::split_instance_name(name)?;
        self.services
            .get(service)
            .is_some_and(|s| s.replicas.is_some())
            .then_some((service, Some(replica)))
    }

    /// The settings a service or an instance runs with.
    pub fn template(&self, name: &str) -> Option<&ServiceConfig> {
        let (service, _) = self.instance_of(name)?;
        self.services.get(service)
    }

    /// The instance number of a log origin that is an instance of a
    /// replicated service (`web.2` -> 2), for the `replica` of
    /// `logs --json`; `None` for a plain service or a hook.
    pub fn replica_of(&self, service: &str) -> Option<u32> {
        self.instance_of(service).and_then(|(_, replica)| replica)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub sys_env: SysEnvPolicy,
    /// Default wait for dependency conditions; `None` waits without limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Global log defaults (already merged into each service's `logs`).
    pub logs: LogConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<GlobalHookKind, HookConfig>,
    /// Usage sampling and history (`kepler.metrics`).
    #[serde(
        default,
        skip_serializing_if = "super::metrics::MetricsConfig::is_default"
    )]
    pub metrics: super::metrics::MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub command: Vec<String>,
    /// Absolute.
    pub working_dir: PathBuf,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependencyEdge>,
    /// The final process environment (`environment` > `env_file` > system
    /// env when `sys_env: inherit`).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Absolute path of the env file that was read, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
    pub sys_env: SysEnvPolicy,
    pub restart: RestartConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<ServiceHookKind, HookConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupSpec>,
    pub logs: LogConfig,
    #[serde(default)]
    pub limits: Limits,
    /// File-creation mask; `None` gives [`super::DEFAULT_UMASK`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<Umask>,
    pub stop_signal: StopSignal,
    pub stop_grace_period: HumanDuration,
    /// `wait:` on the service: `true` puts it in the startup cluster,
    /// `false` defers it; unset, its dependency edges decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// `replicas:` as written. Set (even to 1), the service runs as numbered
    /// instances `web.1` … `web.N`; unset, as one process named `web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

pub const DEFAULT_STOP_GRACE_PERIOD: HumanDuration = HumanDuration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyEdge {
    pub condition: DependencyCondition,
    /// Filled from `kepler.timeout` when the edge has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    pub restart: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<ExitCodeFilter>,
    /// Whether `--wait` and foreground start block on this edge; filled from
    /// the condition's classification when not written.
    pub wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
    ServiceUnhealthy,
    ServiceFailed,
    ServiceStopped,
}

impl DependencyCondition {
    pub const ALL: [Self; 6] = [
        Self::ServiceStarted,
        Self::ServiceHealthy,
        Self::ServiceCompletedSuccessfully,
        Self::ServiceUnhealthy,
        Self::ServiceFailed,
        Self::ServiceStopped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ServiceStarted => "service_started",
            Self::ServiceHealthy => "service_healthy",
            Self::ServiceCompletedSuccessfully => "service_completed_successfully",
            Self::ServiceUnhealthy => "service_unhealthy",
            Self::ServiceFailed => "service_failed",
            Self::ServiceStopped => "service_stopped",
        }
    }

    /// Startup conditions resolve during a normal start; deferred ones wait
    /// for a later transition and do not block `--wait` by default.
    pub fn is_startup(self) -> bool {
        matches!(
            self,
            Self::ServiceStarted | Self::ServiceHealthy | Self::ServiceCompletedSuccessfully
        )
    }

    pub fn needs_healthcheck(self) -> bool {
        matches!(self, Self::ServiceHealthy | Self::ServiceUnhealthy)
    }

    pub fn accepts_exit_code(self) -> bool {
        matches!(self, Self::ServiceFailed | Self::ServiceStopped)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    pub delay: HumanDuration,
    pub max_delay: HumanDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

pub const DEFAULT_RESTART_DELAY: HumanDuration = HumanDuration::from_millis(100);
pub const DEFAULT_RESTART_MAX_DELAY: HumanDuration = HumanDuration::from_secs(30);

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::No,
            watch: Vec::new(),
            delay: DEFAULT_RESTART_DELAY,
            max_delay: DEFAULT_RESTART_MAX_DELAY,
            max_attempts: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[serde(rename = "no")]
    No,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "on-failure")]
    OnFailure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(flatten)]
    pub probe: HealthProbe,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    pub retries: u32,
    pub start_period: HumanDuration,
}

/// How health is probed. Docker's `["CMD", ...]`, `["CMD-SHELL", "..."]` and
/// string forms are all normalised to an argv in `test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProbe {
    /// Healthy when the command exits 0.
    Test(Vec<String>),
    /// Healthy on a 2xx answer to `GET` of this `http://` URL.
    Http(String),
    /// Healthy when a TCP connection to this `host:port` opens.
    Tcp(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookConfig {
    #[serde(flatten)]
    pub action: HookAction,
    /// A service hook without its own `user` runs as the service's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupSpec>,
    /// A service hook has its service's; `None` gives [`super::DEFAULT_UMASK`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<Umask>,
    /// Absolute.
    pub working_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<PathBuf>,
    /// The hook's final environment.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookAction {
    /// A shell script, run with `sh -c`.
    Run(String),
    /// An argv, run directly.
    Command(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceHookKind {
    OnInit,
    PreStart,
    PostStart,
    PreStop,
    PostStop,
    PreRestart,
    PostRestart,
    PostExit,
    PostHealthcheckSuccess,
    PostHealthcheckFail,
}

impl ServiceHookKind {
    pub const ALL: [Self; 10] = [
        Self::OnInit,
        Self::PreStart,
        Self::PostStart,
        Self::PreStop,
        Self::PostStop,
        Self::PreRestart,
        Self::PostRestart,
        Self::PostExit,
        Self::PostHealthcheckSuccess,
        Self::PostHealthcheckFail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::OnInit => "on_init",
            Self::PreStart => "pre_start",
            Self::PostStart => "post_start",
            Self::PreStop => "pre_stop",
            Self::PostStop => "post_stop",
            Self::PreRestart => "pre_restart",
            Self::PostRestart => "post_restart",
            Self::PostExit => "post_exit",
            Self::PostHealthcheckSuccess => "post_healthcheck_success",
            Self::PostHealthcheckFail => "post_healthcheck_fail",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalHookKind {
    OnInit,
    PreStart,
    PostStart,
    PreStop,
    PostStop,
    PreRestart,
    PostRestart,
    PreCleanup,
}

impl GlobalHookKind {
    pub const ALL: [Self; 8] = [
        Self::OnInit,
        Self::PreStart,
        Self::PostStart,
        Self::PreStop,
        Self::PostStop,
        Self::PreRestart,
        Self::PostRestart,
        Self::PreCleanup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::OnInit => "on_init",
            Self::PreStart => "pre_start",
            Self::PostStart => "post_start",
            Self::PreStop => "pre_stop",
            Self::PostStop => "post_stop",
            Self::PreRestart => "pre_restart",
            Self::PostRestart => "post_restart",
            Self::PreCleanup => "pre_cleanup",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Truncate a log file past this size; `None` lets it grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Bytes buffered before a write; 0 writes every line synchronously.
    pub buffer_size: ByteSize,
    pub timestamp: bool,
    pub store: LogStore,
    pub retention: LogRetention,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_size: None,
            buffer_size: ByteSize(0),
            timestamp: false,
            store: LogStore {
                stdout: true,
                stderr: true,
            },
            retention: LogRetention {
                on_start: Retention::Retain,
                on_stop: Retention::Clear,
                on_restart: Retention::Retain,
                on_exit: Retention::Retain,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStore {
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRetention {
    pub on_start: Retention,
    pub on_stop: Retention,
    pub on_restart: Retention,
    pub on_exit: Retention,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retention {
    Clear,
    Retain,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU seconds (`RLIMIT_CPU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fds: Option<u64>,
    /// Swap the service may use (`memory.swap.max`); 0 when `memory` is set
    /// and this is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<ByteSize>,
    /// CPU bandwidth (`cpu.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpuCount>,
    /// Processes and threads (`pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Relative share of block I/O, 1-10000 (`io.weight`, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u16>,
}

/// Why a stored or received snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid config snapshot: {0}")]
    Decode(String),
    #[error("invalid config snapshot: {0}")]
    Invalid(#[from] SnapshotProblems),
}

/// The snapshot as compact JSON: what the daemon stores and reads back, and
/// what a bake worker answers. JSON has no aliases, so what is read is never
/// larger than the bytes it came from.
pub fn snapshot_to_json(config: &BakedConfig) -> Vec<u8> {
    // Strings, numbers, bools, lists and string-keyed maps only.
    serde_json::to_vec(config).expect("a baked config always serialises")
}

/// Decodes a snapshot that did not come from this process's own bake and
/// runs every check of [`check_snapshot`] on it. `json` is already bounded
/// by its reader ([`MAX_SNAPSHOT_BYTES`]).
pub fn snapshot_from_json(json: &[u8]) -> Result<BakedConfig, SnapshotError> {
    let config: BakedConfig =
        serde_json::from_slice(json).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    check_snapshot(&config)?;
    Ok(config)
}

/// Reads back an `expanded_config.yaml` as older Kepler versions stored it
/// (now only written for people to read): at most [`MAX_SNAPSHOT_BYTES`],
/// refused if it uses aliases (Kepler never wrote any, and they could expand
/// a small file into gigabytes), and checked like any snapshot.
pub fn load_snapshot(yaml: &str) -> Result<BakedConfig, SnapshotError> {
    if yaml.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::Decode(format!(
            "larger than {MAX_SNAPSHOT_BYTES} bytes"
        )));
    }
    refuse_aliases(yaml)?;
    let config: BakedConfig =
        serde_yaml::from_str(yaml).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    check_snapshot(&config)?;
    Ok(config)
}

fn refuse_aliases(yaml: &str) -> Result<(), SnapshotError> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(yaml);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::Alias(_), mark)) => {
                return Err(SnapshotError::Decode(format!(
                    "line {}: uses a YAML alias, which kepler never writes",
                    mark.line()
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(SnapshotError::Decode(e.to_string())),
        }
    }
}

/// The snapshot as YAML, for people: `kepler check`, and
/// `expanded_config.yaml` in the state directory (never read back).
pub fn render_snapshot(config: &BakedConfig) -> String {
    // Every field is a string, number, bool, list or string-keyed map, which
    // serde_yaml always serialises.
    serde_yaml::to_string(config).expect("a baked config always serialises")
}
