//! Whole-config checks on dependency edges: targets exist, a service does
//! not wait on itself, health conditions have a healthcheck to watch, and
//! the graph has no cycle. Linear in services plus edges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::decode::closest;
use super::dependency::DependencyRef;
use super::error::Diagnostics;
use super::graph::find_cycles;
use super::snapshot::ServiceConfig;

pub(crate) fn check_dependencies(
    declared: &BTreeSet<String>,
    services: &BTreeMap<String, ServiceConfig>,
    refs: &[DependencyRef],
    diag: &mut Diagnostics,
) {
    for edge in refs {
        if edge.to == edge.from {
            diag.at(
                edge.mark,
                &edge.path,
                format!("`{}` depends on itself; remove this entry", edge.from),
            );
        } else if !declared.contains(&edge.to) {
            let names: Vec<&str> = declared.iter().map(String::as_str).collect();
            let hint = match closest(&edge.to, &names) {
                Some(near) => format!("did you mean `{near}`?"),
                None => "check the name under `services:`".to_owned(),
            };
            diag.at(
                edge.mark,
                &edge.path,
                format!("`{}` is not a service in this config; {hint}", edge.to),
            );
        } else if edge.condition.needs_healthcheck()
            && services
                .get(&edge.to)
                .is_some_and(|target| target.healthcheck.is_none())
        {
            diag.at(
                edge.condition_mark,
                &edge.condition_path,
                format!(
                    "`{}` needs a healthcheck on `{}`, which has none; add `services.{}.healthcheck` or use service_started",
                    edge.condition.name(),
                    edge.to,
                    edge.to
                ),
            );
        }
    }

    let graph: BTreeMap<&str, Vec<&str>> = services
        .iter()
        .map(|(name, service)| {
            let targets = service
                .depends_on
                .keys()
                .map(String::as_str)
                .filter(|to| *to != name && services.contains_key(*to))
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    let by_edge: HashMap<(&str, &str), &DependencyRef> = refs
        .iter()
        .map(|edge| ((edge.from.as_str(), edge.to.as_str()), edge))
        .collect();
    for cycle in find_cycles(&graph) {
        let mut shown: Vec<&str> = cycle.clone();
        shown.push(cycle[0]);
        if let Some(first_edge) = by_edge.get(&(cycle[0], cycle[1 % cycle.len()])) {
            diag.at(
                first_edge.mark,
                &first_edge.path,
                format!(
                    "dependency cycle: {}; remove one of these dependencies",
                    shown.join(" -> ")
                ),
            );
        }
    }
}
