//! The dependency graph of a baked config: start order, dependents, the
//! startup cluster, and cycle finding for validation.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::BakedConfig;

impl BakedConfig {
    /// Every service, each after all of its dependencies; services that do
    /// not depend on each other come in name order. (A baked config has no
    /// cycles; a hand-edited snapshot with one gets its cycle's services last.)
    pub fn topological_order(&self) -> Vec<&str> {
        let mut waiting: BTreeMap<&str, usize> = self
            .services
            .iter()
            .map(|(name, s)| {
                (
                    name.as_str(),
                    s.depends_on
                        .keys()
                        .filter(|d| self.services.contains_key(*d))
                        .count(),
                )
            })
            .collect();
        let dependents = self.dependents_map();
        let mut ready: BTreeSet<&str> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(name, _)| *name)
            .collect();
        let mut order = Vec::with_capacity(self.services.len());
        while let Some(name) = ready.pop_first() {
            order.push(name);
            for dependent in dependents.get(name).into_iter().flatten() {
                let count = waiting.get_mut(dependent).expect("dependents are services");
                *count -= 1;
                if *count == 0 {
                    ready.insert(dependent);
                }
            }
        }
        if order.len() < self.services.len() {
            let placed: BTreeSet<&str> = order.iter().copied().collect();
            order.extend(
                self.services
                    .keys()
                    .map(String::as_str)
                    .filter(|n| !placed.contains(n)),
            );
        }
        order
    }

    /// The startup cluster: services whose every dependency edge is waited
    /// on (`wait`, defaulting to the condition's class) and whose every
    /// dependency is itself in the cluster, unless the service's own `wait`
    /// says otherwise. `start -d --wait` blocks on these.
    pub fn startup_cluster(&self) -> BTreeSet<&str> {
        let mut cluster = BTreeSet::new();
        for name in self.topological_order() {
            let service = &self.services[name];
            let waited = service.wait.unwrap_or_else(|| {
                service
                    .depends_on
                    .iter()
                    .all(|(target, edge)| edge.wait && cluster.contains(target.as_str()))
            });
            if waited {
                cluster.insert(name);
            }
        }
        cluster
    }

    /// Whether `name` is in the startup cluster (see [`Self::startup_cluster`]).
    pub fn is_startup(&self, name: &str) -> bool {
        self.startup_cluster().contains(name)
    }

    fn dependents_map(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, service) in &self.services {
            for target in service.depends_on.keys() {
                if let Some((target, _)) = self.services.get_key_value(target) {
                    map.entry(target.as_str()).or_default().push(name.as_str());
                }
            }
        }
        map
    }
}

/// The cycles of `graph` (service -> the services it depends on), each once,
/// starting where a depth-first walk in name order first meets it.
pub(crate) fn find_cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Visit {
        New,
        OnPath,
        Done,
    }
    let mut visit: BTreeMap<&str, Visit> = graph.keys().map(|k| (*k, Visit::New)).collect();
    let mut cycles = Vec::new();
    for &start in graph.keys() {
        if visit[start] != Visit::New {
            continue;
        }
        // Iterative DFS: the path and, per node on it, the next edge to try.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        visit.insert(start, Visit::OnPath);
        while let Some((node, next_edge)) = path.last_mut() {
            let node = *node;
            let Some(&target) = graph[node].get(*next_edge) else {
                visit.insert(node, Visit::Done);
                path.pop();
                continue;
            };
            *next_edge += 1;
            match visit.get(target).copied() {
                Some(Visit::New) => {
                    visit.insert(target, Visit::OnPath);
                    path.push((target, 0));
                }
                Some(Visit::OnPath) => {
                    let from = path.iter().position(|(n, _)| *n == target).unwrap_or(0);
                    cycles.push(path[from..].iter().map(|(n, _)| *n).collect());
                }
                _ => {}
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_once_each_in_walk_order() {
        let graph: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
            ("x", vec!["y"]),
            ("y", vec!["x"]),
            ("z", vec![]),
        ]);
        let cycles = find_cycles(&graph);
        assert_eq!(cycles, vec![vec!["a", "b", "c"], vec!["x", "y"]]);
    }

    #[test]
    fn acyclic_graphs_have_no_cycles() {
        let graph: BTreeMap<&str, Vec<&str>> =
            BTreeMap::from([("a", vec!["b", "c"]), ("b", vec!["c"]), ("c", vec![])]);
        assert!(find_cycles(&graph).is_empty());
    }
}
