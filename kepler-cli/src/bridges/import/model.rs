//! The kepler.yaml an import writes: only the keys an import can fill, in
//! the order a person would write them, serialised with `serde_yaml`.

use indexmap::IndexMap;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct KeplerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kepler: Option<Global>,
    pub services: IndexMap<String, Service>,
}

#[derive(Debug, Default, Serialize)]
pub struct Global {
    /// `inherit` for tools whose processes start from the caller's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sys_env: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Service {
    pub command: Vec<String>,
    /// Copies of the service (`numprocs`, `instances`, `replicas`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "DependsOn::is_empty")]
    pub depends_on: DependsOn,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub hooks: IndexMap<String, Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<String>,
}

/// Dependencies, written in the short list form when every edge is a plain
/// `service_started` and in the mapping form otherwise.
#[derive(Debug, Default, Clone)]
pub struct DependsOn(pub IndexMap<String, Edge>);

impl DependsOn {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for DependsOn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.values().all(Edge::is_plain) {
            serializer.collect_seq(self.0.keys())
        } else {
            self.0.serialize(serializer)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub condition: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

impl Edge {
    pub const STARTED: &'static str = "service_started";
    pub const HEALTHY: &'static str = "service_healthy";
    pub const COMPLETED: &'static str = "service_completed_successfully";
    pub const STOPPED: &'static str = "service_stopped";

    pub fn on(condition: &'static str) -> Self {
        Self {
            condition,
            restart: None,
            wait: None,
        }
    }

    fn is_plain(&self) -> bool {
        *self == Self::on(Self::STARTED)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Restart {
    /// `restart: always`.
    Policy(&'static str),
    Detailed(RestartDetails),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestartDetails {
    pub policy: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl Restart {
    pub const NO: &'static str = "no";
    pub const ALWAYS: &'static str = "always";
    pub const ON_FAILURE: &'static str = "on-failure";

    /// The short form when only the policy is set.
    pub fn from_details(details: RestartDetails) -> Self {
        if details.watch.is_empty()
            && details.delay.is_none()
            && details.max_delay.is_none()
            && details.max_attempts.is_none()
        {
            Self::Policy(details.policy)
        } else {
            Self::Detailed(details)
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Healthcheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub run: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Logs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<LogStore>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogStore {
    pub stdout: bool,
    pub stderr: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fds: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.swap.is_none()
            && self.cpus.is_none()
            && self.pids.is_none()
            && self.max_fds.is_none()
    }
}

/// The config as YAML, under a comment naming its source.
pub fn render(config: &KeplerConfig, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    // Strings, numbers, bools, lists and string-keyed maps always serialise.
    out.push_str(&serde_yaml::to_string(config).expect("an imported config serialises"));
    out
}
