//! Runtime state of one service, owned by its config actor.

use std::sync::Arc;
use std::time::Instant;

use kepler_protocol::{ServiceInfo, ServiceStatus};

use crate::metrics::{CpuRate, Usage};
use crate::process::Scope;

/// Why a service is being stopped, which decides what happens once it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopIntent {
    /// `kepler stop`: stays down.
    User,
    /// `kepler restart` or restart propagation: started again once down.
    Restart,
    /// The daemon is shutting down: down now, but started again by the next
    /// daemon because it is still wanted.
    Shutdown,
    /// `kepler scale` removes the instance: once down it is forgotten (its
    /// logs are kept).
    ScaleDown,
}

/// One instance the orchestrator runs: a service (`web`), or one replica
/// of a service with `replicas:` (`web.2`).
#[derive(Debug, Clone)]
pub struct ServiceRuntime {
    /// The service it runs: its settings are that service's.
    pub service: Arc<str>,
    /// Its replica number when the service has `replicas:`.
    pub replica: Option<u32>,
    /// Being stopped by `kepler scale`; forgotten once down.
    pub retiring: bool,
    pub status: ServiceStatus,
    pub reason: Option<String>,
    /// Leader pid, which is also the process group id.
    pub pid: Option<i32>,
    /// Every process of the running service: its group or its cgroup.
    pub scope: Option<Scope>,
    /// The last CPU sample, for the percentage `ps` shows.
    pub cpu: Option<CpuRate>,
    /// What the running service used at the last sampling tick.
    pub usage: Option<Usage>,
    /// The signal that ended the last process, if one did.
    pub last_signal: Option<i32>,
    /// What the last failed health probe said; `None` after a success.
    pub last_health_output: Option<String>,
    /// Leader start time in clock ticks since boot, to recognise it later.
    pub start_ticks: Option<u64>,
    pub started_at: Option<Instant>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// Automatic restarts since the user last started it, for `max_attempts`.
    pub attempts: u32,
    /// Bumped on every spawn and every stop; reports from tasks of an older
    /// generation are stale and ignored.
    pub generation: u64,
    /// Wanted up (started and not stopped by the user, not given up on).
    pub desired: bool,
    /// An automatic restart is scheduled.
    pub restart_pending: bool,
    /// When the scheduled restart is due (handed over by an upgrade).
    pub restart_due: Option<tokio::time::Instant>,
    /// Consecutive quick failures, for the restart backoff.
    pub backoff_attempt: u32,
    /// Became healthy at least once since the last spawn.
    pub was_healthy: bool,
    pub health_failures: Option<u32>,
    pub last_exit: Option<i32>,
    /// Waiting for its dependencies before it can be spawned.
    pub waiting: bool,
    /// A stop is queued behind dependents that must stop first, or running.
    pub stop: Option<StopOrder>,
    pub init_done: bool,
    /// The next launch is a restart (runs `post_restart` after spawning).
    pub restarting: bool,
    /// `pre_restart` already ran (before the stop of a user restart).
    pub pre_restart_done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOrder {
    pub signal: Option<i32>,
    pub intent: StopIntent,
    /// The stop signal has been sent (the service is `stopping`).
    pub begun: bool,
}

impl Default for ServiceRuntime {
    fn default() -> Self {
        ServiceRuntime {
            service: Arc::from(""),
            replica: None,
            retiring: false,
            status: ServiceStatus::Stopped,
            reason: None,
            pid: None,
            scope: None,
            cpu: None,
            usage: None,
            last_signal: None,
            last_health_output: None,
            start_ticks: None,
            started_at: None,
            restarts: 0,
            attempts: 0,
            generation: 0,
            desired: false,
            restart_pending: false,
            restart_due: None,
            backoff_attempt: 0,
            was_healthy: false,
            health_failures: None,
            last_exit: None,
            waiting: false,
            stop: None,
            init_done: false,
            restarting: false,
            pre_restart_done: false,
        }
    }
}

impl ServiceRuntime {
    /// Settled: no process, nothing scheduled, nothing will change unless a
    /// user acts. Dependents waiting on a settled service give up.
    pub fn is_settled(&self) -> bool {
        matches!(
            self.status,
            ServiceStatus::Stopped | ServiceStatus::Failed | ServiceStatus::Exited(_)
        ) && !self.restart_pending
            && !self.desired
    }

    /// Terminal for attached mode: nothing running or about to run.
    pub fn is_quiescent(&self) -> bool {
        matches!(
            self.status,
            ServiceStatus::Stopped | ServiceStatus::Failed | ServiceStatus::Exited(_)
        ) && !self.restart_pending
            && !self.waiting
    }

    /// The service as `ps` shows it; `usage` is what its processes use now
    /// (while it runs), with the CPU percentage already updated.
    pub fn info_with_usage(&self, name: &str, usage: Option<Usage>) -> ServiceInfo {
        let mut info = self.info(name);
        if let Some(usage) = usage {
            info.cpu_percent = self.cpu.map(|rate| rate.percent());
            info.memory_bytes = Some(usage.memory_bytes);
            info.cpu_seconds = Some(usage.cpu_usec as f64 / 1e6);
        }
        info
    }

    /// The service with what it used at the last sampling tick (for `top`
    /// and the metrics endpoint, which must not sample on demand).
    pub fn info_with_last_usage(&self, name: &str) -> ServiceInfo {
        let usage = self.usage.filter(|_| self.scope.is_some());
        self.info_with_usage(name, usage)
    }

    pub fn info(&self, name: &str) -> ServiceInfo {
        ServiceInfo {
            name: name.to_string(),
            status: self.status,
            pid: self.pid.map(|p| p as u32),
            uptime_secs: self
                .started_at
                .filter(|_| self.status.is_up() || self.status == ServiceStatus::Stopping)
                .map(|t| t.elapsed().as_secs()),
            restarts: self.restarts,
            health_failures: self.health_failures,
            reason: self.reason.clone(),
            cpu_percent: None,
            memory_bytes: None,
            cpu_seconds: None,
            service: self.service.to_string(),
            replica: self.replica,
        }
    }
}
