//! Health checks as the orchestrator sees them: one runner per running
//! service with a healthcheck, and its events turned into state changes.

use kepler_protocol::ServiceStatus;

use super::Orchestrator;
use crate::config::ServiceHookKind;
use crate::health::{self, HealthEvent, HealthSpec, HealthStatus};
use crate::process::ProcessSpec;

impl Orchestrator {
    /// Starts probing a freshly spawned service, with its environment and user.
    pub(super) fn start_health(&mut self, name: &str, generation: u64, process: &ProcessSpec) {
        let Some(check) = self
            .config
            .template(name)
            .and_then(|s| s.healthcheck.as_ref())
        else {
            return;
        };
        match HealthSpec::new(name, generation, check, process) {
            Ok(spec) => {
                // The config's cgroup exists by now: the service runs in it.
                let spec = spec.in_cgroups(self.cgroup.clone());
                let handle = health::start(spec, self.channels.health.clone());
                self.health.insert(name.to_string(), handle);
            }
            Err(e) => tracing::error!(service = name, "healthcheck not started: {e}"),
        }
    }

    /// Stops probing (the runner kills any probe in flight when dropped).
    pub(super) fn stop_health(&mut self, name: &str) {
        self.health.remove(name);
    }

    pub fn on_health(&mut self, event: HealthEvent) {
        let Some(runtime) = self.services.get_mut(&event.service) else {
            return;
        };
        if runtime.generation != event.generation || !runtime.status.is_up() {
            return;
        }
        runtime.health_failures = Some(event.consecutive_failures);
        runtime.last_health_output = event.reason.clone();
        self.dirty = true;
        if !event.is_transition() {
            return;
        }
        let name = event.service.clone();
        match event.status {
            HealthStatus::Healthy => {
                runtime.was_healthy = true;
                self.set_status(&name, ServiceStatus::Healthy, None);
                self.fire_hook(&name, ServiceHookKind::PostHealthcheckSuccess);
            }
            HealthStatus::Unhealthy => {
                self.set_status(&name, ServiceStatus::Unhealthy, event.reason);
                self.fire_hook(&name, ServiceHookKind::PostHealthcheckFail);
            }
            HealthStatus::Starting => {}
        }
    }
}
