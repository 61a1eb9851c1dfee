//! A service's process ending on its own: reap what is left of its group or
//! cgroup, record the exit (and whether the OOM killer caused it), and apply
//! the restart policy with backoff.

use std::time::Duration;

use kepler_protocol::ServiceStatus;

use super::hooks::{run_post_hooks, spawn_post_hooks};
use super::output::{self, RetentionPoint};
use super::{Internal, Orchestrator};
use crate::config::{RestartPolicy, ServiceHookKind};
use crate::process::ExitStatus;
use crate::state::StopIntent;

/// The reason shown for a service the kernel's OOM killer ended.
pub const OOM_KILLED: &str = "oom-killed";

/// A service that stayed up this long has its backoff reset.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Exit code as shells report it: 128 + N for a death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code.or(status.signal.map(|s| 128 + s)).unwrap_or(-1)
}

/// Why a service that exited is in its state: killed by the OOM killer,
/// waiting `restart_delay` to come back, both, or nothing to say.
fn exit_reason(oom_killed: bool, restart_delay: Option<Duration>) -> Option<String> {
    let restarting = restart_delay
        .filter(|delay| !delay.is_zero())
        .map(|delay| format!("restarting in {delay:?}"));
    match (oom_killed, restarting) {
        (true, Some(restarting)) => Some(format!("{OOM_KILLED}; {restarting}")),
        (true, None) => Some(OOM_KILLED.to_string()),
        (false, restarting) => restarting,
    }
}

/// Records when a scheduled restart is due, for a hand-over.
fn runtime_due(
    services: &mut std::collections::HashMap<String, crate::state::ServiceRuntime>,
    name: &str,
    due: tokio::time::Instant,
) {
    if let Some(runtime) = services.get_mut(name) {
        runtime.restart_due = Some(due);
    }
}

/// Why a service was given up on after `max` restarts.
fn gave_up_reason(max: u32, status: ExitStatus, oom_killed: bool) -> String {
    let plural = if max == 1 { "" } else { "s" };
    let last = if oom_killed {
        format!("{OOM_KILLED} ({status})")
    } else {
        status.to_string()
    };
    format!("gave up after {max} restart{plural}; last {last}")
}

impl Orchestrator {
    pub(super) fn on_leader_exited(&mut self, name: &str, generation: u64, status: ExitStatus) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.generation != generation {
            return;
        }
        runtime.last_exit = Some(exit_code(status));
        runtime.last_signal = status.signal;
        let Some(scope) = runtime.scope.clone() else {
            return;
        };
        self.stop_health(name);
        let pumps = self.take_pumps(name);
        // Like a container whose PID 1 exited: the rest of the group goes too,
        // and the service is finished only once the whole group is gone and
        // its output is stored.
        let mailbox = self.mailbox.clone();
        let service = name.to_string();
        tokio::spawn(async move {
            // Read before the cgroup goes with the leftovers.
            let oom_killed = scope.oom_kills() > 0;
            scope.reap_leftovers().await;
            output::drain(pumps).await;
            let _ = mailbox.send(Internal::GroupGone {
                service,
                generation,
                status,
                oom_killed,
            });
        });
    }

    pub(super) fn on_group_gone(
        &mut self,
        name: &str,
        generation: u64,
        status: ExitStatus,
        oom_killed: bool,
    ) {
        let Some(policy) = self.config.template(name).map(|s| s.restart.clone()) else {
            return;
        };
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.generation != generation {
            return;
        }
        let code = exit_code(status);
        self.apply_retention(name, RetentionPoint::Exit);
        // An automatic restart waits for post_exit to finish (as systemd's
        // ExecStopPost runs before a restart); otherwise it runs on its own.
        let post_exit = self.post_hooks(name, ServiceHookKind::PostExit);
        let Some(runtime) = self.services.get_mut(name) else {
            spawn_post_hooks(name.to_string(), post_exit);
            return;
        };
        let uptime = runtime.started_at.map(|t| t.elapsed()).unwrap_or_default();
        runtime.pid = None;
        runtime.scope = None;
        runtime.cpu = None;
        runtime.usage = None;
        runtime.start_ticks = None;
        runtime.last_exit = Some(code);
        if oom_killed {
            tracing::warn!(
                service = name,
                "killed by the kernel's OOM killer (limits.memory)"
            );
        }
        let wants_restart = runtime.desired
            && match policy.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != 0,
                RestartPolicy::No => false,
            };
        if !wants_restart {
            runtime.desired = false;
            self.set_status(
                name,
                ServiceStatus::Exited(code),
                exit_reason(oom_killed, None),
            );
            spawn_post_hooks(name.to_string(), post_exit);
            return;
        }
        if let Some(max) = policy.max_attempts {
            if runtime.attempts >= max {
                let reason = gave_up_reason(max, status, oom_killed);
                runtime.desired = false;
                self.set_status(name, ServiceStatus::Failed, Some(reason));
                spawn_post_hooks(name.to_string(), post_exit);
                return;
            }
        }
        if uptime >= BACKOFF_RESET_AFTER {
            runtime.backoff_attempt = 0;
        }
        let base = policy.delay.as_duration();
        let delay = base
            .checked_mul(1u32 << runtime.backoff_attempt.min(20))
            .unwrap_or(Duration::MAX)
            .min(policy.max_delay.as_duration().max(base));
        runtime.backoff_attempt += 1;
        runtime.restart_pending = true;
        runtime.generation += 1;
        let generation = runtime.generation;
        let reason = exit_reason(oom_killed, Some(delay));
        self.set_status(name, ServiceStatus::Exited(code), reason);
        self.propagate_restart(name);
        if delay.is_zero() && post_exit.is_empty() {
            self.on_restart_due(name, generation);
        } else {
            let mailbox = self.mailbox.clone();
            let service = name.to_string();
            let due = tokio::time::Instant::now() + delay;
            runtime_due(&mut self.services, name, due);
            tokio::spawn(async move {
                // Boxed, and only when there are hooks (see try_begin_stop).
                if !post_exit.is_empty() {
                    Box::pin(run_post_hooks(&service, post_exit)).await;
                }
                tokio::time::sleep_until(due).await;
                let _ = mailbox.send(Internal::RestartDue {
                    service,
                    generation,
                });
            });
        }
    }

    pub(super) fn on_restart_due(&mut self, name: &str, generation: u64) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.generation != generation || !runtime.restart_pending {
            return;
        }
        runtime.restart_pending = false;
        runtime.restart_due = None;
        runtime.restarts += 1;
        runtime.attempts += 1;
        runtime.restarting = true;
        self.apply_retention(name, RetentionPoint::Restart);
        self.begin_start(name);
    }

    /// Instances of the dependents that declared `restart: true` on the
    /// service `name` is (an instance of).
    pub(super) fn restart_dependents(&self, name: &str) -> Vec<String> {
        let Some(service) = self.services.get(name).map(|s| &*s.service) else {
            return Vec::new();
        };
        let dependents: Vec<String> = self
            .index
            .dependents(service)
            .iter()
            .filter(|d| {
                self.index
                    .dependencies(d)
                    .iter()
                    .any(|(dep, edge)| dep == service && edge.restart)
            })
            .cloned()
            .collect();
        self.all_instances(&dependents)
    }

    /// Dependents declared with `restart: true` on `name` are stopped now
    /// and wait for their condition on `name` again before starting.
    pub(super) fn propagate_restart(&mut self, name: &str) {
        let dependents = self.restart_dependents(name);
        let active: Vec<String> = dependents
            .into_iter()
            .filter(|d| {
                self.services
                    .get(d)
                    .is_some_and(|s| s.pid.is_some() || s.waiting)
            })
            .collect();
        self.stop_all_of(&active, None, StopIntent::Restart);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_kill_is_named_in_the_reason() {
        let killed = ExitStatus {
            code: None,
            signal: Some(libc::SIGKILL),
        };
        assert_eq!(exit_reason(true, None).as_deref(), Some("oom-killed"));
        assert_eq!(
            exit_reason(true, Some(Duration::from_secs(2))).as_deref(),
            Some("oom-killed; restarting in 2s")
        );
        assert_eq!(
            exit_reason(true, Some(Duration::ZERO)).as_deref(),
            Some("oom-killed")
        );
        assert_eq!(
            exit_reason(false, Some(Duration::from_millis(100))).as_deref(),
            Some("restarting in 100ms")
        );
        assert_eq!(exit_reason(false, None), None);
        assert_eq!(
            gave_up_reason(1, killed, true),
            "gave up after 1 restart; last oom-killed (killed by SIGKILL)"
        );
        assert_eq!(
            gave_up_reason(3, killed, false),
            "gave up after 3 restarts; last killed by SIGKILL"
        );
    }
}
