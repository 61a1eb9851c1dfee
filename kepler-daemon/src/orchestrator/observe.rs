//! What the observing requests read of the runtime state: `top` and the
//! metrics endpoint (states with the last tick's usage) and `inspect`
//! (everything known about each process). Nothing here samples.

use std::path::PathBuf;

use kepler_protocol::{ServiceInfo, ServiceStatus};

use super::Orchestrator;
use crate::process::Scope;

/// Every instance of the config: services in name order, replicas by
/// number (as `ps` lists them).
#[derive(Debug, Clone)]
pub struct Observation {
    pub services: Vec<ServiceObservation>,
}

#[derive(Debug, Clone)]
pub struct ServiceObservation {
    /// State, with CPU and memory of the last sampling tick while it runs.
    pub info: ServiceInfo,
    /// What the instance gets beside its service's environment
    /// (`KEPLER_REPLICA`, `KEPLER_REPLICAS`).
    pub instance_env: Vec<(String, String)>,
    /// When the current process started, in milliseconds since the epoch.
    pub started_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// `(status, consecutive failures, last failure)` when it has a
    /// healthcheck.
    pub health: Option<(&'static str, u32, Option<String>)>,
    pub cgroup: Option<PathBuf>,
}

impl Orchestrator {
    pub fn observation(&self) -> Observation {
        let now_ms = crate::events::now_us() / 1000;
        let mut names: Vec<(&str, u32, &String)> = self
            .services
            .iter()
            .map(|(name, s)| (&*s.service, s.replica.unwrap_or(0), name))
            .collect();
        names.sort_unstable();
        let services = names
            .into_iter()
            .map(|(_, _, name)| {
                let runtime = &self.services[name];
                let config = self.settings(name);
                let info = runtime.info_with_last_usage(name);
                let started_at_ms = runtime
                    .started_at
                    .filter(|_| runtime.pid.is_some())
                    .map(|at| now_ms.saturating_sub(at.elapsed().as_millis() as u64));
                let health = config.healthcheck.as_ref().map(|_| {
                    let status = match runtime.status {
                        ServiceStatus::Healthy => "healthy",
                        ServiceStatus::Unhealthy => "unhealthy",
                        _ => "starting",
                    };
                    (
                        status,
                        runtime.health_failures.unwrap_or(0),
                        runtime.last_health_output.clone(),
                    )
                });
                let cgroup = match &runtime.scope {
                    Some(Scope::Cgroup { cgroup, .. }) => Some(cgroup.dir().to_path_buf()),
                    _ => None,
                };
                ServiceObservation {
                    info,
                    instance_env: self.replica_env(name),
                    started_at_ms,
                    exit_code: runtime.last_exit,
                    exit_signal: runtime.last_signal,
                    health,
                    cgroup,
                }
            })
            .collect();
        Observation { services }
    }
}
