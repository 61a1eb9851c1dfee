//! `kepler scale`: adding and removing instances of replicated services at
//! runtime.
//!
//! Instances of a service are always `web.1` … `web.N`: scaling up adds
//! `web.N+1` onwards, scaling down retires the highest numbers first. A
//! retiring instance stays in the runtime map (so `ps` shows it stopping)
//! until it is down, then is forgotten; its logs stay on disk. Retiring
//! instances are therefore always the top of the list, and scaling up
//! again before they are gone takes them back rather than adding twins.

use std::collections::HashSet;
use std::sync::Arc;

use kepler_protocol::{ScaledService, ServiceStatus};
use tokio::sync::oneshot;

use super::{Orchestrator, StopWaiter};
use crate::config::values::MAX_REPLICAS;
use crate::config::MAX_INSTANCES;
use crate::state::{ServiceRuntime, StopIntent};

/// One `SERVICE=COUNT` of a scale request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    pub service: String,
    pub count: u32,
}

/// What a scale did and what its answer waits for.
pub struct ScalePlan {
    pub changes: Vec<ScaledService>,
    /// The instances it started.
    pub started: Vec<String>,
    /// Resolves once every started instance runs (or exited 0), or with
    /// why one did not.
    pub running: oneshot::Receiver<Result<(), String>>,
    /// Resolves once every instance it retired is down.
    pub stopped: oneshot::Receiver<()>,
}

/// A scale waiting for its new instances. Settled by the state changes
/// themselves (`set_status`), so a burst of a thousand starts cannot be
/// missed the way a lagging broadcast subscriber could miss it.
pub(super) struct ScaleWaiter {
    pending: HashSet<String>,
    /// Why one of them will not run, once one has failed.
    failure: Option<String>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Where a new instance stands for its scale.
enum Progress {
    Running,
    Pending,
    Failed(String),
}

impl Orchestrator {
    /// Applies every `SERVICE=COUNT`, or none when one of them is invalid.
    pub fn scale(&mut self, requests: &[ScaleRequest]) -> Result<ScalePlan, String> {
        self.check_scale(requests)?;
        let mut changes = Vec::with_capacity(requests.len());
        let mut started = Vec::new();
        let mut retired = Vec::new();
        for request in requests {
            let from = self.replica_count(&request.service);
            if request.count > from {
                started.extend(self.scale_up(&request.service, from, request.count));
            } else if request.count < from {
                retired.extend(self.scale_down(&request.service, from, request.count));
            }
            changes.push(ScaledService {
                service: request.service.clone(),
                from,
                to: request.count,
            });
        }
        self.dirty = true;
        let (done, stopped) = oneshot::channel();
        if retired.is_empty() {
            let _ = done.send(());
        } else {
            self.stop_waiters.push(StopWaiter {
                pending: retired.iter().cloned().collect(),
                done,
            });
            self.stop_all_of(&retired, None, StopIntent::ScaleDown);
            self.settle_stop_waiters(&retired);
            for request in requests {
                self.forget_retired(&request.service);
            }
        }
        let (done, running) = oneshot::channel();
        self.scale_waiters.push(ScaleWaiter {
            pending: started.iter().cloned().collect(),
            failure: None,
            done,
        });
        // Some may already run (a spawn happens at once when nothing is
        // awaited first).
        for name in &started {
            self.settle_scale_waiters(name);
        }
        if started.is_empty() {
            self.resolve_scale_waiters();
        }
        Ok(ScalePlan {
            changes,
            started,
            running,
            stopped,
        })
    }

    fn progress(&self, name: &str) -> Progress {
        let Some(runtime) = self.services.get(name) else {
            // Taken down again by a later scale: nothing left to wait for.
            return Progress::Running;
        };
        let why = || {
            runtime
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        };
        match runtime.status {
            status if status.is_up() => Progress::Running,
            ServiceStatus::Exited(0) => Progress::Running,
            ServiceStatus::Exited(code) => {
                Progress::Failed(format!("`{name}` exited with code {code}{}", why()))
            }
            ServiceStatus::Failed => Progress::Failed(format!("`{name}` failed{}", why())),
            ServiceStatus::Stopped if runtime.is_settled() => {
                Progress::Failed(format!("`{name}` was stopped{}", why()))
            }
            _ => Progress::Pending,
        }
    }

    /// Tells the scales waiting for `name` where it stands now.
    pub(super) fn settle_scale_waiters(&mut self, name: &str) {
        if self.scale_waiters.is_empty() {
            return;
        }
        let failed = match self.progress(name) {
            Progress::Pending => return,
            Progress::Running => None,
            Progress::Failed(why) => Some(why),
        };
        for waiter in &mut self.scale_waiters {
            if waiter.pending.remove(name) && waiter.failure.is_none() {
                waiter.failure = failed.clone();
            }
        }
        self.resolve_scale_waiters();
    }

    /// Answers the scales with nothing left to wait for, and forgets those
    /// whose client has gone.
    fn resolve_scale_waiters(&mut self) {
        let (finished, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.scale_waiters)
            .into_iter()
            .filter(|w| !w.done.is_closed())
            .partition(|w| w.pending.is_empty() || w.failure.is_some());
        self.scale_waiters = waiting;
        for waiter in finished {
            let _ = waiter.done.send(waiter.failure.map_or(Ok(()), Err));
        }
    }

    /// Every service exists, has `replicas:`, is named once, and the
    /// count is within bounds.
    fn check_scale(&self, requests: &[ScaleRequest]) -> Result<(), String> {
        let mut seen = HashSet::new();
        for ScaleRequest { service, count } in requests {
            if !self.config.services.contains_key(service) {
                let names: Vec<String> = self
                    .config
                    .services
                    .iter()
                    .filter(|(_, s)| s.replicas.is_some())
                    .map(|(name, _)| name.clone())
                    .collect();
                let hint = if names.is_empty() {
                    "none of its services has `replicas:`".to_owned()
                } else {
                    format!("services that can be scaled: {}", names.join(", "))
                };
                let what = match self.config.instance_of(service) {
                    Some((base, _)) => format!(
                        "`{service}` is one instance; scale the service: `kepler scale {base}={count}`"
                    ),
                    None => format!(
                        "no service named `{service}` in {}",
                        self.config.config_file.display()
                    ),
                };
                return Err(format!("{what}; {hint}"));
            }
            if self.config.services[service].replicas.is_none() {
                return Err(format!(
                    "`{service}` has no `replicas:` in {}, so it runs as one process named \
                     `{service}`; add `replicas: 1` to it and run `kepler recreate` to scale it \
                     (its instances are then named {service}.1, {service}.2, …)",
                    self.config.config_file.display()
                ));
            }
            if *count > MAX_REPLICAS {
                return Err(format!(
                    "{service}={count}: a service runs at most {MAX_REPLICAS} replicas"
                ));
            }
            if !seen.insert(service.as_str()) {
                return Err(format!(
                    "`{service}` is named twice; give each service one count"
                ));
            }
        }
        let count = |name: &str| u64::from(self.replica_count(name));
        let total: u64 = self
            .config
            .services
            .keys()
            .map(|name| count(name))
            .sum::<u64>()
            + requests.iter().map(|r| u64::from(r.count)).sum::<u64>()
            - requests.iter().map(|r| count(&r.service)).sum::<u64>();
        if total > MAX_INSTANCES {
            return Err(format!(
                "that would make {total} instances in {}, more than the {MAX_INSTANCES} a config \
                 may run",
                self.config.config_file.display()
            ));
        }
        Ok(())
    }

    /// Adds instances `from+1 ..= to` (taking back retiring ones first)
    /// and starts them if the service runs. Returns the instances started.
    fn scale_up(&mut self, service: &str, from: u32, to: u32) -> Vec<String> {
        let instances = self.index.instances(service);
        // Scaling from 0 means "run these"; otherwise follow the service:
        // new instances of a stopped service stay stopped.
        let runs = from == 0
            || instances[..from as usize]
                .iter()
                .any(|i| self.services.get(i).is_some_and(|s| s.desired));
        let existing = instances.len() as u32;
        let mut revived = Vec::new();
        for replica in from + 1..=to.min(existing) {
            let name = self.index.instances(service)[replica as usize - 1].clone();
            let runtime = self.services.get_mut(&name).expect("indexed instance");
            runtime.retiring = false;
            if let Some(order) = runtime.stop.as_mut() {
                if runs {
                    // Still going down: it comes back up once down.
                    order.intent = StopIntent::Restart;
                    runtime.desired = true;
                    revived.push(name);
                }
            }
        }
        let shared: Arc<str> = Arc::from(service);
        for replica in existing + 1..=to {
            let name = self.index.push_instance(service);
            let generation = self.retired_generations.remove(&name).unwrap_or(0);
            self.services.insert(
                name.clone(),
                ServiceRuntime {
                    service: shared.clone(),
                    replica: Some(replica),
                    generation,
                    ..Default::default()
                },
            );
        }
        if !runs {
            return Vec::new();
        }
        // Revived instances that were already down start like new ones.
        let idle: Vec<String> = self.index.instances(service)[from as usize..to as usize]
            .iter()
            .filter(|i| self.services.get(*i).is_some_and(|s| s.stop.is_none()))
            .cloned()
            .collect();
        self.start(&idle);
        revived.extend(idle);
        revived.sort_by_key(|n| self.services[n].replica);
        revived
    }

    /// Marks instances `to+1 ..= from` as retiring, highest first. Returns
    /// them; the caller stops them.
    fn scale_down(&mut self, service: &str, from: u32, to: u32) -> Vec<String> {
        let names: Vec<String> = self.index.instances(service)[to as usize..from as usize]
            .iter()
            .rev()
            .cloned()
            .collect();
        for name in &names {
            if let Some(runtime) = self.services.get_mut(name) {
                runtime.retiring = true;
            }
        }
        names
    }

    /// Forgets the retiring instances at the top of a service's list that
    /// are down.
    pub(super) fn forget_retired(&mut self, service: &str) {
        while let Some(last) = self.index.instances(service).last() {
            let done = self
                .services
                .get(last)
                .is_some_and(|s| s.retiring && s.stop.is_none());
            if !done {
                break;
            }
            let name = self.index.pop_instance(service).expect("just seen");
            if let Some(runtime) = self.services.remove(&name) {
                self.retired_generations
                    .insert(name.clone(), runtime.generation);
            }
            // A scale still waiting for it to run has nothing left to wait for.
            self.settle_scale_waiters(&name);
            // Its pipes ended with it; the slots go with the pumps.
            self.take_pumps(&name);
            self.health.remove(&name);
            self.watches.remove(&name);
            self.limits_logged.swap_remove(&name);
            self.dirty = true;
        }
    }

    /// `KEPLER_REPLICA` and `KEPLER_REPLICAS` for an instance of a
    /// replicated service (and its hooks); nothing for a plain service.
    pub(super) fn replica_env(&self, name: &str) -> Vec<(String, String)> {
        let Some(runtime) = self.services.get(name) else {
            return Vec::new();
        };
        let Some(replica) = runtime.replica else {
            return Vec::new();
        };
        vec![
            ("KEPLER_REPLICA".to_owned(), replica.to_string()),
            (
                "KEPLER_REPLICAS".to_owned(),
                self.replica_count(&runtime.service).to_string(),
            ),
        ]
    }
}
