//! Service orchestration for one config: dependency-ordered starts, ordered
//! parallel stops, restart policies with backoff, restart propagation.
//!
//! The [`Orchestrator`] is owned by the config actor and mutated only from
//! its loop, so it holds no locks. Anything slow (a stop's grace period, a
//! backoff delay, waiting for a process group to vanish) runs in a task that
//! reports back through the actor's mailbox as an [`Internal`] message tagged
//! with the service's generation; a report of an older generation is stale.
//! Every state change is broadcast ([`crate::events`]) and re-evaluates only
//! the changed service's dependents.
//!
//! What runs is instances: the baked config keeps `replicas:` as written, and
//! the orchestrator keys its runtime state by instance name (`web`, or
//! `web.1` … `web.N`), each knowing its service and replica number. The
//! dependency index joins services and lists their instances; `kepler
//! scale` adds and removes instances at runtime (`scale.rs`).

mod containment;
mod exit;
mod handover;
mod health;
mod hooks;
mod instances;
pub mod modes;
mod observe;
mod output;
pub mod recover;
mod sampling;
mod scale;
mod start;
mod stop;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use indexmap::{IndexMap, IndexSet};
use kepler_protocol::{ServiceInfo, ServiceStatus};
use tokio::sync::{mpsc, oneshot};

use crate::config::BakedConfig;
use crate::containment::ConfigCgroup;
use crate::deps::DependencyIndex;
use crate::events::{ConfigEvents, StateChange};
use crate::health::{HealthEvent, HealthHandle};
use crate::logs::{LogStore, PumpHandle};
use crate::persistence::{ConfigState, ConfigStore, ServiceState};
use crate::process::{ExitStatus, StopOutcome};
use crate::state::ServiceRuntime;
use crate::user::ResolvedUser;
use crate::watcher::{WatchHandle, WatchReport};

pub use observe::{Observation, ServiceObservation};
use sampling::History;
pub use scale::{ScalePlan, ScaleRequest};
pub use stop::StopIntentRequest;

/// Reports from the orchestrator's own tasks back to its actor.
#[derive(Debug)]
pub enum Internal {
    /// The leader process was reaped.
    LeaderExited {
        service: String,
        generation: u64,
        status: ExitStatus,
    },
    /// After a leader exited on its own, the rest of its group is gone too.
    GroupGone {
        service: String,
        generation: u64,
        status: ExitStatus,
        /// The kernel's OOM killer ended it (cgroups with the memory
        /// controller only).
        oom_killed: bool,
    },
    StopFinished {
        service: String,
        generation: u64,
        outcome: StopOutcome,
    },
    RestartDue {
        service: String,
        generation: u64,
    },
    DependencyTimeout {
        service: String,
        generation: u64,
        dependency: String,
    },
    /// The hooks that precede a spawn (`on_init`, `pre_restart`, `pre_start`)
    /// finished.
    LaunchHooksDone {
        service: String,
        generation: u64,
        ran_init: bool,
        result: Result<(), String>,
    },
    /// The global `on_init` hook succeeded.
    GlobalInitDone,
    /// A restart's `post_stop` hook finished; the service may start again.
    PostStopDone {
        service: String,
        generation: u64,
    },
}

/// Where the orchestrator's tasks, probes and watchers report to its actor.
#[derive(Clone)]
pub struct Channels {
    pub mailbox: mpsc::UnboundedSender<Internal>,
    pub health: mpsc::UnboundedSender<HealthEvent>,
    pub watch: mpsc::UnboundedSender<WatchReport>,
}

pub struct Orchestrator {
    config: Arc<BakedConfig>,
    store: ConfigStore,
    index: DependencyIndex,
    services: HashMap<String, ServiceRuntime>,
    events: ConfigEvents,
    logs: LogStore,
    mailbox: mpsc::UnboundedSender<Internal>,
    channels: Channels,
    // Maps filled per start are `IndexMap`s, which keep each key's hash:
    // growing one to 10,000 names does not hash every name again.
    /// Pipe pumps of each running process, awaited before its exit is recorded.
    pumps: IndexMap<String, Vec<PumpHandle>>,
    /// Where each running service's pumps leave their pipes on an upgrade.
    pump_slots: IndexMap<String, handover::PumpSlots>,
    health: HashMap<String, HealthHandle>,
    watches: HashMap<String, WatchHandle>,
    owner_uid: u32,
    global_init_done: bool,
    dirty: bool,
    stop_waiters: Vec<StopWaiter>,
    /// `kepler scale` requests waiting for their new instances to run.
    scale_waiters: Vec<scale::ScaleWaiter>,
    users: HashMap<(String, Option<String>), ResolvedUser>,
    /// The last generation of each instance `kepler scale` removed: one
    /// added again under the same name carries on from it, so reports still
    /// in flight for the old one are stale for the new one too.
    retired_generations: HashMap<String, u64>,
    /// The config's cgroup (cgroup mode), created with its first process.
    cgroup: Option<ConfigCgroup>,
    /// Per service, its limits that are not enforced as configured.
    limit_notes: BTreeMap<String, Vec<String>>,
    /// Services whose log already says so.
    limits_logged: IndexSet<String>,
    /// The usage history, written at each sampling tick.
    history: History,
}

/// What a start or restart request needs to wait on.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// Startup-cluster services among the request, with whether each has a
    /// healthcheck (then it is ready only once healthy).
    pub startup: Vec<(String, bool)>,
    /// The services the request started (or restarted) that are in the
    /// startup cluster, in dependency order ...
    pub ready: Vec<String>,
    /// ... and those that are not: `--wait` does not wait for them.
    pub deferred: Vec<String>,
    /// Every service's state when the request was handled.
    pub views: Vec<StateChange>,
}

/// Someone waiting for a set of services to finish stopping.
struct StopWaiter {
    pending: HashSet<String>,
    done: oneshot::Sender<()>,
}

impl Orchestrator {
    pub fn new(
        config: Arc<BakedConfig>,
        store: ConfigStore,
        owner_uid: u32,
        state: ConfigState,
        events: ConfigEvents,
        logs: LogStore,
        channels: Channels,
    ) -> Self {
        let mut index = DependencyIndex::build(&config);
        // Counts set by `kepler scale` outlive a daemon restart (within the
        // bounds scale itself keeps: state.json is only root's, but read it
        // as carefully as anything on disk).
        let mut total = crate::config::snapshot_check::instance_count(config.services.values());
        for (service, &count) in &state.replicas {
            let written = config.services.get(service).and_then(|s| s.replicas);
            let Some(written) = written else {
                tracing::warn!(service, count, "ignoring a saved replica count");
                continue;
            };
            let grown = total - u64::from(written) + u64::from(count);
            if count > crate::config::values::MAX_REPLICAS || grown > crate::config::MAX_INSTANCES {
                tracing::warn!(service, count, "ignoring a saved replica count");
                continue;
            }
            total = grown;
            while index.instances(service).len() > count as usize {
                index.pop_instance(service);
            }
            while index.instances(service).len() < count as usize {
                index.push_instance(service);
            }
        }
        events.snapshot.send_replace(config.clone());
        let limit_notes = containment::limit_notes(&config);
        let mut services = HashMap::new();
        for (service, settings) in &config.services {
            let service: Arc<str> = Arc::from(service.as_str());
            for (i, name) in index.instances(&service).iter().enumerate() {
                let saved = state.services.get(name);
                let runtime = ServiceRuntime {
                    service: service.clone(),
                    replica: settings.replicas.map(|_| i as u32 + 1),
                    restarts: saved.map_or(0, |s| s.restarts),
                    last_exit: saved.and_then(|s| s.last_exit_code),
                    init_done: saved.is_some_and(|s| s.init_done),
                    ..Default::default()
                };
                services.insert(name.clone(), runtime);
            }
        }
        Orchestrator {
            config,
            store,
            index,
            services,
            events,
            logs,
            mailbox: channels.mailbox.clone(),
            channels,
            pumps: IndexMap::new(),
            pump_slots: IndexMap::new(),
            health: HashMap::new(),
            watches: HashMap::new(),
            owner_uid,
            global_init_done: state.global_init_done,
            dirty: true,
            stop_waiters: Vec::new(),
            scale_waiters: Vec::new(),
            users: HashMap::new(),
            retired_generations: HashMap::new(),
            cgroup: None,
            limit_notes,
            limits_logged: IndexSet::new(),
            history: History::Closed,
        }
    }

    pub fn config(&self) -> &Arc<BakedConfig> {
        &self.config
    }

    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// Instance states in name order (replicas by number), for `ps`.
    pub fn infos(&self) -> Vec<ServiceInfo> {
        let mut names: Vec<(&str, u32, &String)> = self
            .services
            .iter()
            .map(|(name, s)| (&*s.service, s.replica.unwrap_or(0), name))
            .collect();
        names.sort_unstable();
        names
            .into_iter()
            .map(|(_, _, name)| self.services[name].info(name))
            .collect()
    }

    /// The plan of a start of `names` (all when empty), which also starts
    /// what they depend on.
    pub fn plan(&self, names: &[String]) -> StartPlan {
        let closure = self.start_set(names);
        self.plan_acting_on(&closure, &closure)
    }

    /// The plan of a restart that took down `restarted`; their dependencies
    /// are waited for but were not restarted.
    pub fn restart_plan(&self, restarted: &[String]) -> StartPlan {
        let closure = self.start_set(restarted);
        let restarted: HashSet<&String> = restarted.iter().collect();
        let acted: Vec<String> = closure
            .iter()
            .filter(|n| restarted.contains(n))
            .cloned()
            .collect();
        self.plan_acting_on(&closure, &acted)
    }

    /// Where every service stands, which of `waited` form the startup
    /// cluster (for `--wait` and attached mode), and how the services the
    /// request acted on split between ready and deferred.
    fn plan_acting_on(&self, waited: &[String], acted: &[String]) -> StartPlan {
        let cluster = self.config.startup_cluster();
        let in_cluster = |name: &String| {
            self.services
                .get(name)
                .is_some_and(|s| cluster.contains(&*s.service))
        };
        let startup = waited
            .iter()
            .filter(|n| in_cluster(n))
            .map(|n| (n.clone(), self.settings(n).healthcheck.is_some()))
            .collect();
        let (ready, deferred) = acted.iter().cloned().partition(in_cluster);
        StartPlan {
            startup,
            ready,
            deferred,
            views: self.views(),
        }
    }

    /// Every service's state now, as the state changes that would lead
    /// there (for a plan, and for a waiter that fell behind the broadcast).
    pub fn views(&self) -> Vec<StateChange> {
        self.services
            .iter()
            .map(|(name, s)| StateChange {
                service: Arc::from(name.as_str()),
                status: s.status,
                reason: s.reason.clone(),
                quiescent: s.is_quiescent(),
                settled: s.is_settled(),
                at_us: 0,
            })
            .collect()
    }

    /// Instances known, running or not: what a state write holds.
    pub fn instance_count(&self) -> usize {
        self.services.len()
    }

    /// Services with a process or on their way to one.
    pub fn active_count(&self) -> usize {
        self.services
            .values()
            .filter(|s| !s.is_quiescent() || s.pid.is_some())
            .count()
    }

    pub fn running_count(&self) -> usize {
        self.services.values().filter(|s| s.status.is_up()).count()
    }

    pub fn handle_internal(&mut self, message: Internal) {
        match message {
            Internal::LeaderExited {
                service,
                generation,
                status,
            } => self.on_leader_exited(&service, generation, status),
            Internal::GroupGone {
                service,
                generation,
                status,
                oom_killed,
            } => self.on_group_gone(&service, generation, status, oom_killed),
            Internal::StopFinished {
                service,
                generation,
                outcome,
            } => self.on_stop_finished(&service, generation, outcome),
            Internal::RestartDue {
                service,
                generation,
            } => self.on_restart_due(&service, generation),
            Internal::DependencyTimeout {
                service,
                generation,
                dependency,
            } => self.on_dependency_timeout(&service, generation, &dependency),
            Internal::LaunchHooksDone {
                service,
                generation,
                ran_init,
                result,
            } => self.on_launch_hooks_done(&service, generation, ran_init, result),
            Internal::PostStopDone {
                service,
                generation,
            } => self.on_post_stop_done(&service, generation),
            Internal::GlobalInitDone => {
                self.global_init_done = true;
                self.dirty = true;
            }
        }
    }

    /// Records a new status, tells subscribers, and lets the service's
    /// dependents re-check their conditions.
    fn set_status(&mut self, name: &str, status: ServiceStatus, reason: Option<String>) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        runtime.status = status;
        runtime.reason = reason.clone();
        let quiescent = runtime.is_quiescent();
        let settled = runtime.is_settled();
        self.dirty = true;
        if status == ServiceStatus::Failed {
            // A failed service holds no file watches.
            self.stop_watch(name);
        }
        self.events.publish_state(StateChange {
            service: Arc::from(name),
            status,
            reason,
            quiescent,
            settled,
            at_us: crate::events::now_us(),
        });
        self.settle_scale_waiters(name);
        for dependent in self.dependent_instances(name) {
            self.evaluate_waiting(&dependent);
        }
    }

    /// Publishes a new reason for a service whose status stays (e.g. what
    /// a starting service waits for), so progress displays can show it.
    /// Dependents need no re-evaluation: conditions do not look at reasons.
    fn set_reason(&mut self, name: &str, reason: Option<String>) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.reason == reason {
            return;
        }
        runtime.reason = reason.clone();
        self.events.publish_state(StateChange {
            service: Arc::from(name),
            status: runtime.status,
            reason,
            quiescent: runtime.is_quiescent(),
            settled: runtime.is_settled(),
            at_us: crate::events::now_us(),
        });
    }

    /// Writes `state.json` if anything changed since the last write. Called
    /// by the actor after each batch of messages, so a burst of transitions
    /// costs one write.
    /// State changed since it was last written.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn persist_if_dirty(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for runtime in self.services.values_mut() {
            if let (Some(pid), None) = (runtime.pid, runtime.start_ticks) {
                runtime.start_ticks = recover::start_ticks(pid);
            }
        }
        // Serialised straight from the runtime map: no copy of ten thousand
        // names per write.
        let state = StateView {
            global_init_done: self.global_init_done,
            services: ServicesView(&self.services),
            replicas: self
                .config
                .services
                .iter()
                // Only replicated services are counted: a count costs a
                // lookup per instance, and this runs on every state write.
                .filter_map(|(name, s)| {
                    let written = s.replicas?;
                    let count = self.replica_count(name);
                    (written != count).then(|| (name.clone(), count))
                })
                .collect(),
        };
        if let Err(e) = self.store.write_state(&state) {
            tracing::error!(
                config = %self.config.config_file.display(),
                "cannot write state: {e}"
            );
        }
    }

    /// Takes a new baked config (after `recreate`); only valid while nothing runs.
    pub fn replace_config(&mut self, config: Arc<BakedConfig>) {
        let fresh = Orchestrator::new(
            config,
            self.store.clone(),
            self.owner_uid,
            ConfigState::default(),
            self.events.clone(),
            self.logs.clone(),
            self.channels.clone(),
        );
        *self = fresh;
    }
}

/// `state.json` as [`ConfigState`] reads it, borrowed from the orchestrator.
#[derive(serde::Serialize)]
struct StateView<'a> {
    global_init_done: bool,
    services: ServicesView<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    replicas: BTreeMap<String, u32>,
}

struct ServicesView<'a>(&'a HashMap<String, ServiceRuntime>);

impl serde::Serialize for ServicesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, s)| {
            (
                name,
                ServiceState {
                    desired: s.desired,
                    pgid: s.pid,
                    start_ticks: s.start_ticks,
                    restarts: s.restarts,
                    last_exit_code: s.last_exit,
                    init_done: s.init_done,
                },
            )
        }))
    }
}
