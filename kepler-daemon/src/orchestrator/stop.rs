//! Stopping services: dependents before their dependencies, independent
//! services in parallel, each through signal, grace period, then SIGKILL of
//! its whole process group or cgroup.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kepler_protocol::ServiceStatus;
use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::hooks::run_post_hooks;
use super::output::{self, RetentionPoint};
use super::{Internal, Orchestrator, StopWaiter};
use crate::config::ServiceHookKind;
use crate::process::StopOutcome;
use crate::state::{StopIntent, StopOrder};

/// What a stop request asks for.
#[derive(Debug, Clone, Copy)]
pub struct StopIntentRequest {
    pub signal: Option<i32>,
    pub intent: StopIntent,
}

impl Orchestrator {
    /// Stops `names` (all when empty). The receiver resolves once every one
    /// of them is down.
    pub fn stop(&mut self, names: &[String], request: StopIntentRequest) -> oneshot::Receiver<()> {
        let selected = self.selection(names);
        let (done, finished) = oneshot::channel();
        self.stop_waiters.push(StopWaiter {
            pending: selected.iter().cloned().collect(),
            done,
        });
        self.stop_all_of(&selected, request.signal, request.intent);
        self.settle_stop_waiters(&selected);
        finished
    }

    /// `kepler restart`: the selection, plus dependents that declared
    /// `restart: true` on it, go down and come back up. Returns that set.
    pub fn restart(&mut self, names: &[String]) -> Vec<String> {
        let mut selected = self.selection(names);
        // Instances `kepler scale` is taking down stay down.
        selected.retain(|n| self.services.get(n).is_some_and(|s| !s.retiring));
        let mut seen: HashSet<String> = selected.iter().cloned().collect();
        // Propagation goes service to service: an instance restarting takes
        // down every instance of the dependents that asked for it.
        let mut propagated: HashSet<Arc<str>> = HashSet::new();
        let mut i = 0;
        while i < selected.len() {
            let service = self.services[&selected[i]].service.clone();
            if propagated.insert(service) {
                for dependent in self.restart_dependents(&selected[i]) {
                    if seen.insert(dependent.clone()) {
                        selected.push(dependent);
                    }
                }
            }
            i += 1;
        }
        self.stop_all_of(&selected, None, StopIntent::Restart);
        selected
    }

    /// Queues every stop of a set before beginning any, so a service never
    /// goes down while a dependent in the same set is still up.
    pub(super) fn stop_all_of(
        &mut self,
        names: &[String],
        signal: Option<i32>,
        intent: StopIntent,
    ) {
        for name in names {
            self.queue_stop(name, signal, intent);
        }
        for name in names {
            self.try_begin_stop(name);
        }
    }

    /// Marks one service to stop (see [`Self::try_begin_stop`] for when it
    /// begins); a service with no process is settled at once.
    pub(super) fn queue_stop(&mut self, name: &str, signal: Option<i32>, intent: StopIntent) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if let Some(order) = &mut runtime.stop {
            // Already stopping; a user stop overrides a restart, and a
            // scale-down overrides both (the instance is going away).
            match (order.intent, intent) {
                (StopIntent::ScaleDown, _) => {}
                (_, StopIntent::User | StopIntent::ScaleDown) => {
                    order.intent = intent;
                    runtime.desired = false;
                }
                _ => {}
            }
            return;
        }
        match intent {
            StopIntent::User | StopIntent::ScaleDown => runtime.desired = false,
            StopIntent::Restart => runtime.desired = true,
            // What was wanted stays wanted, for the next daemon to resume.
            StopIntent::Shutdown => {}
        }
        runtime.restart_pending = false;
        runtime.waiting = false;
        runtime.generation += 1;
        if runtime.pid.is_none() {
            let was_starting = runtime.status == ServiceStatus::Starting;
            match intent {
                StopIntent::Restart => self.begin_start(name),
                _ if was_starting => self.set_status(name, ServiceStatus::Stopped, None),
                // Exited or failed services keep showing how they ended.
                _ => self.dirty = true,
            }
            return;
        }
        runtime.stop = Some(StopOrder {
            signal,
            intent,
            begun: false,
        });
        // Shown as stopping from now on, even while it waits for dependents.
        self.set_status(name, ServiceStatus::Stopping, None);
    }

    /// Sends the stop signal once every dependent being stopped is down.
    pub(super) fn try_begin_stop(&mut self, name: &str) {
        let blocked = self.dependent_instances(name).iter().any(|d| {
            self.services
                .get(d)
                .is_some_and(|s| s.stop.is_some() && s.pid.is_some())
        });
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        let (Some(order), Some(scope)) = (runtime.stop.as_mut(), runtime.scope.clone()) else {
            return;
        };
        if blocked || order.begun {
            return;
        }
        order.begun = true;
        let service = self
            .config
            .template(name)
            .expect("every instance belongs to a service of the config");
        let signal = match order.signal {
            Some(number) => Signal::try_from(number).unwrap_or(Signal::SIGTERM),
            None => service.stop_signal.signal(),
        };
        let grace = if signal == Signal::SIGKILL {
            Duration::ZERO
        } else {
            service.stop_grace_period.as_duration()
        };
        let generation = runtime.generation;
        let intent = order.intent;
        let mut kinds = Vec::new();
        if intent == StopIntent::Restart {
            kinds.push(ServiceHookKind::PreRestart);
            runtime.pre_restart_done = true;
        }
        kinds.push(ServiceHookKind::PreStop);
        let hooks = self.service_hooks(name, &kinds).unwrap_or_else(|e| {
            tracing::warn!(service = name, "{e}");
            Vec::new()
        });
        self.stop_health(name);
        let pumps = self.take_pumps(name);
        let mailbox = self.mailbox.clone();
        let task_name = name.to_string();
        tokio::spawn(async move {
            // A failing pre-stop hook is logged; the stop goes ahead. Boxed,
            // and only when there are hooks: running hooks takes a future of
            // some 19 KB, which each of ten thousand stops would carry.
            if !hooks.is_empty() {
                if let Err(e) = Box::pin(super::hooks::run_in_order(hooks)).await {
                    tracing::warn!(service = %task_name, "{e}");
                }
            }
            let outcome = scope.stop(signal, grace).await;
            output::drain(pumps).await;
            let _ = mailbox.send(Internal::StopFinished {
                service: task_name,
                generation,
                outcome,
            });
        });
        self.set_status(name, ServiceStatus::Stopping, None);
    }

    pub(super) fn on_stop_finished(&mut self, name: &str, generation: u64, outcome: StopOutcome) {
        let Some(runtime) = self.services.get(name) else {
            return;
        };
        if runtime.generation != generation || runtime.stop.is_none() {
            return;
        }
        // A restart awaits its post_stop hook before starting again.
        let post_stop = match runtime.stop.map(|order| order.intent) {
            Some(StopIntent::Restart) => self.post_hooks(name, ServiceHookKind::PostStop),
            _ => Vec::new(),
        };
        let runtime = self.services.get_mut(name).expect("checked above");
        let Some(order) = runtime.stop.take() else {
            return;
        };
        runtime.pid = None;
        runtime.scope = None;
        runtime.cpu = None;
        runtime.usage = None;
        runtime.start_ticks = None;
        runtime.started_at = None;
        // Scheduled before the status is published, so nobody takes the
        // service for settled while its post_stop runs.
        runtime.restart_pending = !post_stop.is_empty();
        let reason = match outcome {
            StopOutcome::Killed => Some("killed after the stop grace period".to_string()),
            StopOutcome::Unkillable => {
                Some("some processes could not be killed; see the daemon log".to_string())
            }
            StopOutcome::AlreadyGone | StopOutcome::Graceful => None,
        };
        self.set_status(name, ServiceStatus::Stopped, reason);
        match order.intent {
            StopIntent::User => {
                self.apply_retention(name, RetentionPoint::Stop);
                self.stop_watch(name);
                self.fire_hook(name, ServiceHookKind::PostStop);
            }
            // A removed instance's logs stay readable: no retention here.
            StopIntent::ScaleDown => {
                self.stop_watch(name);
                self.fire_hook(name, ServiceHookKind::PostStop);
            }
            StopIntent::Restart => {
                self.apply_retention(name, RetentionPoint::Restart);
                if let Some(runtime) = self.services.get_mut(name) {
                    runtime.restarting = true;
                }
                if post_stop.is_empty() {
                    self.begin_start(name);
                } else {
                    let mailbox = self.mailbox.clone();
                    let service = name.to_string();
                    tokio::spawn(async move {
                        run_post_hooks(&service, post_stop).await;
                        let _ = mailbox.send(Internal::PostStopDone {
                            service,
                            generation,
                        });
                    });
                }
            }
            StopIntent::Shutdown => {}
        }
        // Dependencies waiting for this service's instances to be down may
        // go once none of them is still stopping.
        let service = self.services[name].service.clone();
        let still_stopping = self.index.instances(&service).iter().any(|i| {
            self.services
                .get(i)
                .is_some_and(|s| s.stop.is_some() && s.pid.is_some())
        });
        if !still_stopping {
            let dependencies: Vec<String> = self
                .index
                .dependencies(&service)
                .iter()
                .map(|(d, _)| d.clone())
                .collect();
            for dependency in self.all_instances(&dependencies) {
                self.try_begin_stop(&dependency);
            }
        }
        self.settle_stop_waiters(&[name.to_string()]);
        if order.intent == StopIntent::ScaleDown {
            self.forget_retired(&service);
        }
    }

    /// A restart's post_stop hook is done: start the service again, unless
    /// someone stopped it meanwhile (which bumps its generation).
    pub(super) fn on_post_stop_done(&mut self, name: &str, generation: u64) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.generation != generation || !runtime.restart_pending {
            return;
        }
        runtime.restart_pending = false;
        self.begin_start(name);
    }

    /// Resolves stop waiters whose services are all down.
    /// Someone waits for services to finish stopping.
    pub fn stopping(&self) -> bool {
        !self.stop_waiters.is_empty()
    }

    pub(super) fn settle_stop_waiters(&mut self, changed: &[String]) {
        if self.stop_waiters.is_empty() {
            return;
        }
        // A name no longer known was an instance removed by `kepler scale`.
        let down: Vec<&String> = changed
            .iter()
            .filter(|n| self.services.get(*n).is_none_or(|s| s.stop.is_none()))
            .collect();
        for waiter in &mut self.stop_waiters {
            for name in &down {
                waiter.pending.remove(*name);
            }
        }
        let (finished, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stop_waiters)
            .into_iter()
            .partition(|w| w.pending.is_empty());
        self.stop_waiters = waiting;
        for waiter in finished {
            let _ = waiter.done.send(());
        }
    }
}
