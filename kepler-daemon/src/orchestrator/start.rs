//! Starting services: dependency waits (event-driven, with per-edge
//! timeouts), then spawning.

use std::time::Instant;

use kepler_protocol::ServiceStatus;

use super::output::RetentionPoint;
use super::{Internal, Orchestrator};
use crate::config::{DependencyEdge, ServiceHookKind, DEFAULT_UMASK};
use crate::containment::LimitPlan;
use crate::deps::{self, Readiness};
use crate::process::{self, OutputMode, ProcessSpec};
use crate::user::{identity_env, resolve_user, ResolvedUser};

impl Orchestrator {
    /// Starts `names` (all when empty) and everything they depend on, in
    /// dependency order. Services already up are left alone.
    pub fn start(&mut self, names: &[String]) {
        for name in self.start_set(names) {
            let idle = self
                .services
                .get(&name)
                .is_some_and(|s| !s.status.is_up() && !s.waiting && s.stop.is_none());
            if idle {
                self.apply_retention(&name, RetentionPoint::Start);
                // A start by the user gives `max_attempts` a fresh count.
                if let Some(runtime) = self.services.get_mut(&name) {
                    runtime.attempts = 0;
                }
            }
            self.begin_start(&name);
        }
    }

    /// Puts one service on its way up: it waits for its dependencies, then
    /// spawns. A service already up, starting, or stopping is left alone.
    pub(super) fn begin_start(&mut self, name: &str) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.status.is_up() || runtime.waiting || runtime.stop.is_some() {
            return;
        }
        runtime.desired = true;
        runtime.restart_pending = false;
        runtime.waiting = true;
        runtime.generation += 1;
        let generation = runtime.generation;
        let global_timeout = self.config.kepler.timeout;
        let service = runtime.service.clone();
        for (dependency, edge) in self.index.dependencies(&service) {
            let Some(timeout) = edge.timeout.or(global_timeout) else {
                continue;
            };
            let mailbox = self.mailbox.clone();
            let (service, dependency) = (name.to_string(), dependency.clone());
            tokio::spawn(async move {
                tokio::time::sleep(timeout.as_duration()).await;
                let _ = mailbox.send(Internal::DependencyTimeout {
                    service,
                    generation,
                    dependency,
                });
            });
        }
        self.set_status(name, ServiceStatus::Starting, None);
        self.evaluate_waiting(name);
    }

    /// Re-checks a waiting service's dependencies: spawn it when all hold,
    /// fail it when one never can.
    pub(super) fn evaluate_waiting(&mut self, name: &str) {
        let Some(runtime) = self.services.get(name).filter(|s| s.waiting) else {
            return;
        };
        let service = runtime.service.clone();
        let mut pending = Vec::new();
        for (dependency, edge) in self.index.dependencies(&service) {
            match self.readiness(dependency, edge) {
                Readiness::Satisfied => {}
                Readiness::Pending => pending.push(format!(
                    "waiting for `{dependency}` to be {}",
                    deps::condition_goal(edge.condition)
                )),
                Readiness::Never(why) => {
                    self.fail(name, format!("cannot start: {why}"));
                    return;
                }
            }
        }
        if pending.is_empty() {
            if let Some(runtime) = self.services.get_mut(name) {
                runtime.waiting = false;
            }
            self.prepare_launch(name);
        } else {
            self.set_reason(name, Some(pending.join("; ")));
        }
    }

    /// Where the edge to `dependency` stands, over all of its instances.
    fn readiness(&self, dependency: &str, edge: &DependencyEdge) -> Readiness {
        let instances = self
            .index
            .instances(dependency)
            .iter()
            .filter_map(|i| self.services.get(i).map(|s| (i.as_str(), s)));
        deps::check_instances(dependency, instances, edge)
    }

    pub(super) fn on_dependency_timeout(&mut self, name: &str, generation: u64, dependency: &str) {
        let Some(runtime) = self.services.get(name) else {
            return;
        };
        if runtime.generation != generation || !runtime.waiting {
            return;
        }
        let edge = self
            .index
            .dependencies(&runtime.service)
            .iter()
            .find(|(d, _)| d == dependency)
            .map(|(_, e)| e.clone());
        let Some(edge) = edge else { return };
        if self.readiness(dependency, &edge) == Readiness::Satisfied {
            return;
        }
        let waited = edge.timeout.or(self.config.kepler.timeout);
        self.fail(
            name,
            format!(
                "timed out after {} waiting for `{dependency}` to be {}",
                waited.map(|t| t.to_string()).unwrap_or_default(),
                deps::condition_goal(edge.condition)
            ),
        );
    }

    /// Gives up on a service: it stays down until a user acts.
    pub(super) fn fail(&mut self, name: &str, reason: String) {
        if let Some(runtime) = self.services.get_mut(name) {
            tracing::warn!(service = name, "{reason}");
            runtime.desired = false;
            runtime.waiting = false;
            runtime.restart_pending = false;
            runtime.generation += 1;
        }
        self.set_status(name, ServiceStatus::Failed, Some(reason));
    }

    /// Runs the hooks that must succeed before the spawn (`on_init` once,
    /// `pre_restart` for an automatic restart, `pre_start`), then launches.
    fn prepare_launch(&mut self, name: &str) {
        let runtime = &self.services[name];
        let mut kinds = Vec::new();
        if !runtime.init_done {
            kinds.push(ServiceHookKind::OnInit);
        }
        if runtime.restarting && !runtime.pre_restart_done {
            kinds.push(ServiceHookKind::PreRestart);
        }
        kinds.push(ServiceHookKind::PreStart);
        let generation = runtime.generation;
        let hooks = match self.service_hooks(name, &kinds) {
            Ok(hooks) => hooks,
            Err(reason) => return self.fail(name, reason),
        };
        let runs_init = !self.services[name].init_done
            && self
                .settings(name)
                .hooks
                .contains_key(&ServiceHookKind::OnInit);
        if hooks.is_empty() {
            return self.launch(name);
        }
        self.set_reason(name, Some("running its start hooks".into()));
        let mailbox = self.mailbox.clone();
        let service = name.to_string();
        tokio::spawn(async move {
            let result = super::hooks::run_in_order(hooks).await;
            let _ = mailbox.send(Internal::LaunchHooksDone {
                service,
                generation,
                ran_init: runs_init,
                result,
            });
        });
    }

    pub(super) fn on_launch_hooks_done(
        &mut self,
        name: &str,
        generation: u64,
        ran_init: bool,
        result: Result<(), String>,
    ) {
        let Some(runtime) = self.services.get_mut(name) else {
            return;
        };
        if runtime.generation != generation || runtime.status != ServiceStatus::Starting {
            return;
        }
        match result {
            Ok(()) => {
                if ran_init {
                    runtime.init_done = true;
                }
                self.launch(name);
            }
            Err(e) => self.fail(name, format!("cannot start: {e}")),
        }
    }

    /// Spawns the service's process and watches it.
    fn launch(&mut self, name: &str) {
        let limits = self.limit_plan(name);
        let spec = match self.process_spec(name, &limits) {
            Ok(spec) => spec,
            Err(reason) => return self.fail(name, reason),
        };
        self.log_limit_notes_once(name);
        let cgroup = match self.service_cgroup(name, &limits) {
            Ok(cgroup) => cgroup,
            Err(reason) => return self.fail(name, format!("cannot start: {reason}")),
        };
        let spawned = match process::spawn_into(&spec, cgroup.clone()) {
            Ok(spawned) => spawned,
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    crate::containment::remove_when_empty(&cgroup);
                }
                return self.fail(name, e.to_string());
            }
        };
        let runtime = self.services.get_mut(name).expect("service exists");
        let restarted = std::mem::take(&mut runtime.restarting);
        runtime.pre_restart_done = false;
        runtime.reason = None;
        runtime.pid = Some(spawned.pid);
        runtime.scope = Some(spawned.scope.clone());
        runtime.cpu = None;
        runtime.usage = None;
        // Read lazily when state is persisted: right now the child is in
        // exec and reading its /proc entry would wait for it.
        runtime.start_ticks = None;
        runtime.started_at = Some(Instant::now());
        runtime.was_healthy = false;
        runtime.health_failures = self
            .config
            .template(name)
            .and_then(|s| s.healthcheck.as_ref())
            .map(|_| 0);
        let generation = runtime.generation;

        self.pump_output(name, spawned.stdout, spawned.stderr);
        self.start_health(name, generation, &spec);
        // Only now: a service that cannot even start holds no watches.
        self.ensure_watch(name);
        self.watch_exit(name, generation, Some(spawned.exit));
        self.set_status(name, ServiceStatus::Running, None);
        self.fire_hook(name, ServiceHookKind::PostStart);
        if restarted {
            self.fire_hook(name, ServiceHookKind::PostRestart);
        }
    }

    /// Who a service (and, by default, its hooks and probes) runs as: its
    /// `user:`; in a config owned by a non-root user, that owner when unset.
    /// Nothing in such a config may run as root: membership of the `kepler`
    /// group must never be a way to become root.
    pub(super) fn service_user(&mut self, name: &str) -> Result<Option<ResolvedUser>, String> {
        let service = self.settings(name);
        let spec = match (&service.user, self.owner_uid) {
            (Some(user), _) => Some(user.to_string()),
            (None, 0) => None,
            (None, owner) => Some(owner.to_string()),
        };
        let Some(spec) = spec else { return Ok(None) };
        let key = (spec, service.group.as_ref().map(|g| g.to_string()));
        let resolved = match self.users.get(&key) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = resolve_user(&key.0, key.1.as_deref())
                    .map_err(|e| format!("cannot start: {e}"))?;
                self.users.insert(key.clone(), resolved.clone());
                resolved
            }
        };
        if self.owner_uid != 0 && (resolved.uid == 0 || resolved.gid == 0) {
            return Err(format!(
                "refused: this config belongs to uid {}, so its services may not run as root \
                 (user `{}`); only root's configs may",
                self.owner_uid, key.0
            ));
        }
        self.within_owner_rights(&resolved)?;
        Ok(Some(resolved))
    }

    /// In a config owned by a non-root user, a process may run only as that
    /// user and with groups it has: `group: shadow` or `user: someone-else`
    /// would lend a `kepler` group member rights it does not have.
    pub(super) fn within_owner_rights(&mut self, resolved: &ResolvedUser) -> Result<(), String> {
        if self.owner_uid == 0 {
            return Ok(());
        }
        let owner = self.owner_uid;
        if resolved.uid != owner {
            return Err(format!(
                "refused: this config belongs to uid {owner}, so what it runs may run only as \
                 that user, not as uid {}; only root's configs may name other users",
                resolved.uid
            ));
        }
        let key = (owner.to_string(), None);
        let own = match self.users.get(&key) {
            Some(own) => own.clone(),
            None => {
                let own = resolve_user(&key.0, None).map_err(|e| format!("cannot start: {e}"))?;
                self.users.insert(key, own.clone());
                own
            }
        };
        let foreign: Vec<String> = std::iter::once(resolved.gid)
            .chain(resolved.supplementary.iter().copied())
            .filter(|g| *g != own.gid && !own.supplementary.contains(g))
            .map(|g| g.to_string())
            .collect();
        if !foreign.is_empty() {
            return Err(format!(
                "refused: this config belongs to uid {owner}, which is not in group(s) {}; \
                 only root's configs may use groups their owner does not have",
                foreign.join(", ")
            ));
        }
        Ok(())
    }

    /// What to spawn for a service: its command, final environment, working
    /// directory, user and limits.
    pub(super) fn process_spec(
        &mut self,
        name: &str,
        limits: &LimitPlan,
    ) -> Result<ProcessSpec, String> {
        let user = self.service_user(name)?;
        let service = self.settings(name);
        let mut env = service.environment.clone();
        if let Some(resolved) = &user {
            for (key, value) in identity_env(resolved) {
                env.entry(key).or_insert(value);
            }
        }
        env.extend(self.replica_env(name));
        Ok(ProcessSpec {
            argv: service.command.clone(),
            env,
            working_dir: service.working_dir.clone(),
            user,
            limits: limits.rlimits,
            umask: service.umask.unwrap_or(DEFAULT_UMASK).0,
            stdout: OutputMode::Pipe,
            stderr: OutputMode::Pipe,
        })
    }
}
