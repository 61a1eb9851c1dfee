//! What the observing requests read of the runtime state: `top` and the
//! metrics endpoint (states with the last tick's usage) and `inspect`
//! (everything known about each process). Nothing here samples.

use std::path::PathBuf;

use kepler_protocol::{ServiceInfo, ServiceStatus};

use super::Orchestrator;
use crate::process::Scope;

/// Every service of the config, in name order.
#[derive(Debug, Clone)]
pub struct Observation {
    pub services: Vec<ServiceObservation>,
}

#[derive(Debug, Clone)]
pub struct ServiceObservation {
    /// State, with CPU and memory of the last sampling tick while it runs.
    pub info: ServiceInfo,
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
        let services = self
            .config
            .services
            .iter()
            .filter_map(|(name, config)| {
                let runtime = self.services.get(name)?;
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
                Some(ServiceObservation {
                    info,
                    started_at_ms,
                    exit_code: runtime.last_exit,
                    exit_signal: runtime.last_signal,
                    health,
                    cgroup,
                })
            })
            .collect();
        Observation { services }
    }
}
