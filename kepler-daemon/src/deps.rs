//! Dependency index and condition checking.
//!
//! The index is built once per baked config so that a state change of one
//! service only looks at that service's dependents (O(degree)), never at
//! every service. Conditions are judged from the dependency's runtime state
//! alone, with the spec's meanings; a condition that can no longer become
//! true (its dependency has settled and will not change on its own) is
//! reported as such, so the waiting service can fail instead of hanging.

use std::collections::HashMap;

use crate::config::{BakedConfig, DependencyCondition, DependencyEdge};
use crate::state::ServiceRuntime;
use kepler_protocol::ServiceStatus;

/// Dependencies and dependents of every service of one config.
#[derive(Debug, Default)]
pub struct DependencyIndex {
    dependencies: HashMap<String, Vec<(String, DependencyEdge)>>,
    dependents: HashMap<String, Vec<String>>,
    /// Services in dependency order (dependencies first).
    order: Vec<String>,
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
        }
        index
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
    fn unhealthy_requires_having_been_healthy() {
        let e = edge(DependencyCondition::ServiceUnhealthy, None);
        let mut rt = runtime(ServiceStatus::Unhealthy, false);
        assert_eq!(check("db", &rt, &e), Readiness::Pending);
        rt.was_healthy = true;
        assert_eq!(check("db", &rt, &e), Readiness::Satisfied);
    }
}
