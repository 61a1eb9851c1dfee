//! Whole-config checks on dependency edges: targets exist, a service does
//! not wait on itself, health conditions have a healthcheck to watch, and
//! the graph has no cycle. Linear in services plus edges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::decode::closest;
use super::dependency::DependencyRef;
use super::document::Mark;
use super::error::Diagnostics;
use super::graph::find_cycles;
use super::snapshot::ServiceConfig;
use super::values::{numbered_suffix, split_instance_name};

/// A replicated service `web` runs instances `web.1`, `web.2`, …; a service
/// named `web.<number>` beside it would share a name (and log files) with
/// one of them, now or after a `kepler scale`.
pub(crate) fn check_instance_clash(
    name: &str,
    mark: Mark,
    services: &BTreeMap<String, ServiceConfig>,
    diag: &mut Diagnostics,
) {
    let Some(base) = numbered_suffix(name) else {
        return;
    };
    if services.get(base).is_some_and(|s| s.replicas.is_some()) {
        diag.at(
            mark,
            &format!("services.{name}"),
            format!(
                "`{name}` looks like an instance of `{base}`, which has `replicas:` and so runs \
                 instances named {base}.1, {base}.2, …; rename this service (e.g. `{base}-{}`)",
                &name[base.len() + 1..]
            ),
        );
    }
}

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
        } else if let Some(service) = split_instance_name(&edge.to)
            .map(|(service, _)| service)
            .filter(|s| services.get(*s).is_some_and(|s| s.replicas.is_some()))
        {
            diag.at(
                edge.mark,
                &edge.path,
                format!(
                    "`{}` is one instance of the replicated service `{service}`; depend on \
                     `{service}` instead (the condition then holds once every instance meets it)",
                    edge.to
                ),
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
