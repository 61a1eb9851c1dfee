//! Dependency index and condition checking.
//!
//! The index is built once per baked config so that a state change of one
//! service only looks at that service's dependents (O(degree)), never at
//! every service. Edges join services; each service runs as one or more
//! instances (`web`, or `web.1` … `web.N` with `replicas:`), which the index
//! lists so a change of one instance reaches the instances of its
//! dependents. Conditions are judged from the dependency's runtime state
//! alone, with the spec's meanings; a condition on a replicated service
//! holds once every instance meets it. A condition that can no longer
//! become true (its dependency has settled and will not change on its own)
//! is reported as such, so the waiting service can fail instead of hanging.

use std::collections::HashMap;

use crate::config::values::instance_name;
use crate::config::{BakedConfig, DependencyCondition, DependencyEdge};
use crate::state::ServiceRuntime;
use kepler_protocol::ServiceStatus;

/// Dependencies and dependents of every service of one config, and the
/// instances each service runs as.
#[derive(Debug, Default)]
pub struct DependencyIndex {
    dependencies: HashMap<String, Vec<(String, DependencyEdge)>>,
    dependents: HashMap<String, Vec<String>>,
    /// Services in dependency order (dependencies first).
    order: Vec<String>,
    /// Instance names of each service, by replica number; a service without
    /// `replicas:` has one, named like the service.
    instances: HashMap<String, Vec<String>>,
}

impl DependencyIndex {
    pub fn build(config: &BakedConfig) -> Self {
        let mut index = DependencyIndex {
            order: config
                .topological_order()
                .into_iter()
                .map(String::from)
                .collect(),
            ..Default::default()
        };
        for (name, service) in &config.services {
            let edges: Vec<_> = service
                .depends_on
                .iter()
                .map(|(dep, edge)| (dep.clone(), edge.clone()))
                .collect();
            for (dep, _) in &edges {
                index
                    .dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(name.clone());
            }
            index.dependencies.insert(name.clone(), edges);
            let instances = match service.replicas {
                None => vec![name.clone()],
                Some(count) => (1..=count).map(|i| instance_name(name, i)).collect(),
            };
            index.instances.insert(name.clone(), instances);
        }
        index
    }

    /// The instances `service` runs as, by replica number.
    pub fn instances(&self, service: &str) -> &[String] {
        self.instances
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Adds the next instance of a replicated service (`web.N+1`).
    pub fn push_instance(&mut self, service: &str) -> String {
        let list = self.instances.entry(service.to_owned()).or_default();
        let name = instance_name(service, list.len() as u32 + 1);
        list.push(name.clone());
        name
    }

    /// Forgets the highest instance of a service, once it is gone.
    pub fn pop_instance(&mut self, service: &str) -> Option<String> {
        self.instances.get_mut(service)?.pop()
    }

    pub fn dependencies(&self, service: &str) -> &[(String, DependencyEdge)] {
        self.dependencies
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn dependents(&self, service: &str) -> &[String] {
        self.dependents
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// `roots` plus everything they depend on, transitively, in dependency order.
    pub fn with_dependencies(&self, roots: &[String]) -> Vec<String> {
        let mut wanted: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut stack: Vec<&str> = roots.iter().map(String::as_str).collect();
        while let Some(name) = stack.pop() {
            if wanted.insert(name) {
                stack.extend(self.dependencies(name).iter().map(|(d, _)| d.as_str()));
            }
        }
        self.order
            .iter()
            .filter(|n| wanted.contains(n.as_str()))
            .cloned()
            .collect()
    }
}

/// Where a dependency edge stands right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Satisfied,
    Pending,
    /// Cannot become true without someone acting; the text says why.
    Never(String),
}

/// Judges `edge` against the dependency's current runtime state.
pub fn check(dep_name: &str, dep: &ServiceRuntime, edge: &DependencyEdge) -> Readiness {
    use DependencyCondition as C;
    use ServiceStatus as S;
    let status = dep.status;
    let code_matches = |code: i32| edge.exit_code.as_ref().is_none_or(|f| f.matches(code));
    let satisfied = match edge.condition {
        C::ServiceStarted => status.is_up(),
        C::ServiceHealthy => status == S::Healthy,
        C::ServiceCompletedSuccessfully => status == S::Exited(0),
        C::ServiceUnhealthy => status == S::Unhealthy && dep.was_healthy,
        C::ServiceFailed => matches!(status, S::Exited(code) if code != 0 && code_matches(code)),
        // Anything that is no longer running counts as stopped; an exit-code
        // filter only accepts exits whose code it lists.
        C::ServiceStopped => match status {
            S::Exited(code) => code_matches(code),
            S::Stopped | S::Failed => edge.exit_code.is_none(),
            _ => false,
        },
    };
    if dep.stop.is_some() {
        // Going down (perhaps to restart): whatever it satisfies now is about
        // to change.
        Readiness::Pending
    } else if satisfied {
        Readiness::Satisfied
    } else if dep.is_settled() {
        Readiness::Never(format!(
            "dependency `{dep_name}` is {} and will not become {}",
            status.name(),
            condition_goal(edge.condition)
        ))
    } else {
        Readiness::Pending
    }
}

/// Judges `edge` against every instance of the dependency `service`: it is
/// satisfied once all are, impossible once one can never be. A service with
/// no instances (scaled to 0) is ignored, as compose ignores a dependency
/// scaled to 0.
pub fn check_instances<'a>(
    service: &str,
    instances: impl IntoIterator<Item = (&'a str, &'a ServiceRuntime)>,
    edge: &DependencyEdge,
) -> Readiness {
    let mut pending = false;
    for (name, runtime) in instances {
        match check(name, runtime, edge) {
            Readiness::Satisfied => {}
            Readiness::Pending => pending = true,
            Readiness::Never(why) if name == service => return Readiness::Never(why),
            Readiness::Never(why) => {
                return Readiness::Never(format!("{why} (every instance of `{service}` must)"))
            }
        }
    }
    if pending {
        Readiness::Pending
    } else {
        Readiness::Satisfied
    }
}

/// What a condition waits for, in words.
pub fn condition_goal(condition: DependencyCondition) -> &'static str {
    use DependencyCondition as C;
    match condition {
        C::ServiceStarted => "started",
        C::ServiceHealthy => "healthy",
        C::ServiceCompletedSuccessfully => "completed successfully",
        C::ServiceUnhealthy => "unhealthy",
        C::ServiceFailed => "failed",
        C::ServiceStopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExitCodeFilter;

    fn edge(condition: DependencyCondition, exit_code: Option<&str>) -> DependencyEdge {
        DependencyEdge {
            condition,
            timeout: None,
            restart: false,
            exit_code: exit_code.map(|f| serde_yaml::from_str::<ExitCodeFilter>(f).unwrap()),
            wait: condition.is_startup(),
        }
    }

    fn runtime(status: ServiceStatus, settled: bool) -> ServiceRuntime {
        ServiceRuntime {
            status,
            desired: !settled,
            ..Default::default()
        }
    }

    #[test]
    fn started_is_satisfied_by_any_up_state() {
        let e = edge(DependencyCondition::ServiceStarted, None);
        for s in [
            ServiceStatus::Running,
            ServiceStatus::Healthy,
            ServiceStatus::Unhealthy,
        ] {
            assert_eq!(check("db", &runtime(s, false), &e), Readiness::Satisfied);
        }
        assert_eq!(
            check("db", &runtime(ServiceStatus::Starting, false), &e),
            Readiness::Pending
        );
    }

    #[test]
    fn a_settled_dependency_makes_the_condition_impossible() {
        let e = edge(DependencyCondition::ServiceCompletedSuccessfully, None);
        assert_eq!(
            check("job", &runtime(ServiceStatus::Exited(0), true), &e),
            Readiness::Satisfied
        );
        match check("job", &runtime(ServiceStatus::Exited(3), true), &e) {
            Readiness::Never(why) => assert!(why.contains("exited (3)"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Still going to restart: keep waiting.
        assert_eq!(
            check("job", &runtime(ServiceStatus::Exited(3), false), &e),
            Readiness::Pending
        );
    }

    #[test]
    fn failed_and_stopped_honour_exit_code_filters() {
        let failed = edge(DependencyCondition::ServiceFailed, Some("[5, '10:12']"));
        assert_eq!(
            check("a", &runtime(ServiceStatus::Exited(5), true), &failed),
            Readiness::Satisfied
        );
        assert_eq!(
            check("a", &runtime(ServiceStatus::Exited(11), true), &failed),
            Readiness::Satisfied
        );
        assert!(matches!(
            check("a", &runtime(ServiceStatus::Exited(6), true), &failed),
            Readiness::Never(_)
        ));
        let stopped = edge(DependencyCondition::ServiceStopped, None);
        assert_eq!(
            check("a", &runtime(ServiceStatus::Stopped, true), &stopped),
            Readiness::Satisfied
        );
        assert_eq!(
            check("a", &runtime(ServiceStatus::Exited(0), true), &stopped),
            Readiness::Satisfied
        );
        let filtered = edge(DependencyCondition::ServiceStopped, Some("[0]"));
        assert_eq!(
            check("a", &runtime(ServiceStatus::Exited(0), true), &filtered),
            Readiness::Satisfied
        );
        assert!(matches!(
            check("a", &runtime(ServiceStatus::Stopped, true), &filtered),
            Readiness::Never(_)
        ));
    }

    #[test]
    fn a_replicated_dependency_holds_once_every_instance_meets_it() {
        let e = edge(DependencyCondition::ServiceHealthy, None);
        let healthy = runtime(ServiceStatus::Healthy, false);
        let starting = runtime(ServiceStatus::Running, false);
        let gone = runtime(ServiceStatus::Failed, true);
        assert_eq!(
            check_instances("web", [("web.1", &healthy), ("web.2", &healthy)], &e),
            Readiness::Satisfied
        );
        assert_eq!(
            check_instances("web", [("web.1", &healthy), ("web.2", &starting)], &e),
            Readiness::Pending
        );
        match check_instances("web", [("web.1", &starting), ("web.2", &gone)], &e) {
            Readiness::Never(why) => {
                assert!(
                    why.contains("`web.2`") && why.contains("every instance"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Scaled to 0: ignored.
        assert_eq!(check_instances("web", [], &e), Readiness::Satisfied);
    }

    #[test]
    fn unhealthy_requires_having_been_healthy() {
        let e = edge(DependencyCondition::ServiceUnhealthy, None);
        let mut rt = runtime(ServiceStatus::Unhealthy, false);
        assert_eq!(check("db", &rt, &e), Readiness::Pending);
        rt.was_healthy = true;
        assert_eq!(check("db", &rt, &e), Readiness::Satisfied);
    }
}
