//! An upgrade's two halves as one config sees them: the old daemon's
//! orchestrator describes its services and lets go of their pipes; the new
//! one adopts the same processes without spawning or signalling anything.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kepler_protocol::ServiceStatus;
use tokio::net::unix::pipe;

use super::{Internal, Orchestrator};
use crate::containment::Cgroup;
use crate::health::{self, HealthSpec, HealthStatus, ResumedHealth};
use crate::logs::{self, HandedPipe, HandoverSlot, Origin, Stream};
use crate::process::{self, ExitStatus, ExitWaiter, Scope};
use crate::upgrade::format::{ConfigHandover, PipeHandover, ServiceHandover};

/// The pipe slots of one running service's pumps.
pub(super) type PumpSlots = Vec<(Stream, HandoverSlot)>;

/// How long pumps get to stop at a line boundary and give their pipe back.
const PUMP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

impl Orchestrator {
    /// Why this config cannot be handed over now, if it cannot: a service
    /// between states (starting, stopping, its exit being recorded) would
    /// need work in flight that a new daemon cannot pick up.
    pub fn handover_refusal(&self) -> Option<String> {
        let mut busy: Vec<String> = self
            .services
            .iter()
            .filter(|(name, s)| {
                matches!(s.status, ServiceStatus::Starting | ServiceStatus::Stopping)
                    || s.waiting
                    || s.stop.is_some()
                    || s.retiring
                    || s.pid.is_some_and(|pid| !process::all_children(&[pid]))
                    || (s.pid.is_some() && !self.pumps.contains_key(*name))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if busy.is_empty() {
            return None;
        }
        busy.sort();
        Some(format!(
            "{}: {} between states (starting, stopping or exiting); try again once they settle",
            self.config.config_file.display(),
            busy.join(", ")
        ))
    }

    /// This config's runtime state, without its pipes.
    pub fn handover_state(&self) -> ConfigHandover {
        let now = tokio::time::Instant::now();
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                let restart_in_ms = s.restart_pending.then(|| {
                    s.restart_due.map_or(0, |due| {
                        due.saturating_duration_since(now).as_millis() as u64
                    })
                });
                let service = ServiceHandover {
                    status: s.status,
                    reason: s.reason.clone(),
                    pid: s.pid,
                    cgroup: s
                        .scope
                        .as_ref()
                        .and_then(|scope| scope.cgroup())
                        .map(|c| c.dir().to_path_buf()),
                    start_ticks: s.start_ticks,
                    up_ms: s.started_at.map(|t| t.elapsed().as_millis() as u64),
                    restarts: s.restarts,
                    attempts: s.attempts,
                    generation: s.generation,
                    desired: s.desired,
                    backoff_attempt: s.backoff_attempt,
                    was_healthy: s.was_healthy,
                    health_failures: s.health_failures,
                    last_exit: s.last_exit,
                    init_done: s.init_done,
                    restart_in_ms,
                    stdout: None,
                    stderr: None,
                };
                (name.clone(), service)
            })
            .collect();
        ConfigHandover {
            path: self.config.config_file.clone(),
            owner_uid: self.owner_uid,
            global_init_done: self.global_init_done,
            services,
        }
    }

    /// Waits for every pump to stop at a line boundary (the hand-over flag
    /// is raised) and fills in each service's pipes. The descriptors are
    /// left open, unowned: they are for the next program.
    pub async fn release_pipes(&mut self, state: &mut ConfigHandover) {
        let pumps: Vec<_> = self.pumps.drain(..).flat_map(|(_, p)| p).collect();
        let _ = tokio::time::timeout(PUMP_STOP_TIMEOUT, futures::future::join_all(pumps)).await;
        for (name, slots) in self.pump_slots.drain(..) {
            let Some(service) = state.services.get_mut(&name) else {
                continue;
            };
            for (stream, slot) in slots {
                let handed = crate::logs::lock(&slot).take();
                let Some(HandedPipe { fd, carry }) = handed else {
                    tracing::warn!(service = name, "a pump did not give its pipe back");
                    continue;
                };
                let pipe = Some(PipeHandover {
                    fd: fd.into_raw_fd(),
                    carry,
                });
                match stream {
                    Stream::Stdout => service.stdout = pipe,
                    Stream::Stderr => service.stderr = pipe,
                }
            }
        }
    }

    /// Takes over the services a previous daemon ran: same processes, same
    /// pipes, same counters. `exits` holds the exit waiters of adopted
    /// children; one missing means the child was reaped before the
    /// hand-over, so its exit is recorded with an unknown status.
    pub fn adopt(&mut self, state: ConfigHandover, exits: &mut HashMap<i32, ExitWaiter>) {
        self.global_init_done = state.global_init_done;
        self.dirty = true;
        let now = Instant::now();
        for (name, handed) in state.services {
            if !self.services.contains_key(&name) {
                tracing::warn!(service = name, "handed-over service is not in the config");
                close_pipes(&handed);
                continue;
            }
            let pid = handed.pid;
            let cgroup = handed.cgroup.clone();
            let up_for = Duration::from_millis(handed.up_ms.unwrap_or(0));
            {
                let runtime = self.services.get_mut(&name).expect("checked above");
                runtime.status = handed.status;
                runtime.reason = handed.reason.clone();
                runtime.start_ticks = handed.start_ticks;
                runtime.started_at = handed.up_ms.map(|_| now.checked_sub(up_for).unwrap_or(now));
                runtime.restarts = handed.restarts;
                runtime.attempts = handed.attempts;
                runtime.generation = handed.generation;
                runtime.desired = handed.desired;
                runtime.backoff_attempt = handed.backoff_attempt;
                runtime.was_healthy = handed.was_healthy;
                runtime.health_failures = handed.health_failures;
                runtime.last_exit = handed.last_exit;
                runtime.init_done = handed.init_done;
            }
            if let Some(after) = handed.restart_in_ms {
                self.rearm_restart(&name, Duration::from_millis(after));
            }
            let Some(pid) = pid.filter(|pid| *pid > 1) else {
                close_pipes(&handed);
                continue;
            };
            let scope = match cgroup {
                Some(dir) => Scope::Cgroup {
                    leader: pid,
                    cgroup: Arc::new(Cgroup::adopt_existing(dir)),
                },
                None => Scope::Group(pid),
            };
            if scope.cgroup().is_some() {
                if let Err(e) = self.config_cgroup() {
                    tracing::warn!(service = name, "{e}");
                }
            }
            let runtime = self.services.get_mut(&name).expect("checked above");
            runtime.pid = Some(pid);
            runtime.scope = Some(scope);
            let generation = runtime.generation;
            self.adopt_pipes(&name, &handed);
            self.resume_health(&name, generation, &handed, up_for);
            self.ensure_watch(&name);
            self.watch_exit(&name, generation, exits.remove(&pid));
        }
    }

    /// Schedules a restart a previous daemon had scheduled, by its deadline.
    fn rearm_restart(&mut self, name: &str, after: Duration) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        let due = tokio::time::Instant::now() + after;
        runtime.restart_pending = true;
        runtime.restart_due = Some(due);
        let generation = runtime.generation;
        let mailbox = self.mailbox.clone();
        let service = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let _ = mailbox.send(Internal::RestartDue {
                service,
                generation,
            });
        });
    }

    /// Pumps the handed-over pipes again, from the partial lines read.
    fn adopt_pipes(&mut self, name: &str, handed: &ServiceHandover) {
        let mut pumps = Vec::with_capacity(2);
        let mut slots = Vec::with_capacity(2);
        for (stream, pipe) in [
            (Stream::Stdout, &handed.stdout),
            (Stream::Stderr, &handed.stderr),
        ] {
            let Some(pipe) = pipe else { continue };
            // SAFETY: the previous daemon handed this descriptor over for
            // this pipe alone; it is taken exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(pipe.fd) };
            if let Err(e) = crate::upgrade::format::close_on_exec(&fd) {
                tracing::warn!(service = name, "cannot mark a pipe close-on-exec: {e}");
            }
            let receiver = match pipe::Receiver::from_owned_fd(fd) {
                Ok(receiver) => receiver,
                Err(e) => {
                    tracing::error!(service = name, "cannot read a handed-over pipe: {e}");
                    continue;
                }
            };
            let sink = self.sink(Some(name), stream, Origin::Service);
            let slot: HandoverSlot = Arc::new(Mutex::new(None));
            pumps.push(logs::spawn_pump_with(
                receiver,
                sink,
                pipe.carry.clone(),
                Some(slot.clone()),
            ));
            slots.push((stream, slot));
        }
        self.pumps.insert(name.to_string(), pumps);
        self.pump_slots.insert(name.to_string(), slots);
    }

    /// Restarts the service's health check where the previous daemon's was.
    fn resume_health(
        &mut self,
        name: &str,
        generation: u64,
        handed: &ServiceHandover,
        up_for: Duration,
    ) {
        let Some(check) = self
            .config
            .template(name)
            .and_then(|s| s.healthcheck.clone())
        else {
            return;
        };
        let limits = self.limit_plan(name);
        let process = match self.process_spec(name, &limits) {
            Ok(process) => process,
            Err(e) => {
                tracing::error!(service = name, "healthcheck not resumed: {e}");
                return;
            }
        };
        let status = match handed.status {
            ServiceStatus::Healthy => HealthStatus::Healthy,
            ServiceStatus::Unhealthy => HealthStatus::Unhealthy,
            _ => HealthStatus::Starting,
        };
        match HealthSpec::new(name, generation, &check, &process) {
            Ok(spec) => {
                let spec = spec.in_cgroups(self.cgroup.clone()).resumed(ResumedHealth {
                    status,
                    failures: handed.health_failures.unwrap_or(0),
                    up_for,
                });
                let handle = health::start(spec, self.channels.health.clone());
                self.health.insert(name.to_string(), handle);
            }
            Err(e) => tracing::error!(service = name, "healthcheck not resumed: {e}"),
        }
    }

    /// Reports the leader's exit to the actor (`Internal::LeaderExited`), for a
    /// service this daemon spawned or one handed over with its waiter.
    pub(super) fn watch_exit(&mut self, name: &str, generation: u64, exit: Option<ExitWaiter>) {
        let mailbox = self.mailbox.clone();
        let service = name.to_string();
        match exit {
            Some(exit) => {
                tokio::spawn(async move {
                    let status = exit.await;
                    let _ = mailbox.send(Internal::LeaderExited {
                        service,
                        generation,
                        status,
                    });
                });
            }
            None => {
                tracing::warn!(
                    service = name,
                    "its process ended before the hand-over finished; its exit status is unknown"
                );
                let _ = mailbox.send(Internal::LeaderExited {
                    service,
                    generation,
                    status: ExitStatus {
                        code: None,
                        signal: None,
                    },
                });
            }
        }
    }
}

/// Closes the pipes of a handed-over service that is not adopted.
fn close_pipes(handed: &ServiceHandover) {
    for pipe in [&handed.stdout, &handed.stderr].into_iter().flatten() {
        // SAFETY: handed over for this pipe alone, taken once, here.
        drop(unsafe { OwnedFd::from_raw_fd(pipe.fd) });
    }
}
