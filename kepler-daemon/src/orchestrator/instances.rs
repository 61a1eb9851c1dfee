//! Instances as requests name them: a service (`web`) stands for all of
//! its instances, an instance (`web.2`) for itself. Selections for stop and
//! restart, the start set (with dependencies, in dependency order), name
//! checks, and the lookups every other part uses: an instance's settings and
//! a service's current count.

use std::collections::{HashMap, HashSet};

use super::Orchestrator;
use crate::config::ServiceConfig;

impl Orchestrator {
    /// Unknown names are an error listing the config's services. A service
    /// (`web`) stands for all its instances; an instance (`web.2`) for
    /// itself.
    pub fn check_names(&self, names: &[String]) -> Result<(), String> {
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| !self.config.services.contains_key(*n) && !self.services.contains_key(*n))
            .map(String::as_str)
            .collect();
        let Some(first) = unknown.first() else {
            return Ok(());
        };
        let file = self.config.config_file.display();
        if let (1, Some((service, _))) = (unknown.len(), self.config.instance_of(first)) {
            let count = self.replica_count(service);
            return Err(format!(
                "`{first}` is not running: `{service}` has {count} replica(s){}; \
                 `kepler scale {service}=N` changes how many",
                match count {
                    0 => String::new(),
                    1 => format!(" ({service}.1)"),
                    n => format!(" ({service}.1 … {service}.{n})"),
                }
            ));
        }
        let known: Vec<String> = self
            .config
            .services
            .iter()
            .map(|(name, s)| match s.replicas {
                None => name.clone(),
                Some(_) => format!("{name} (×{})", self.replica_count(name)),
            })
            .collect();
        Err(format!(
            "no service named {} in {file}; its services are: {}",
            unknown
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            known.join(", ")
        ))
    }

    /// How many instances of a replicated service run now, not counting
    /// those `kepler scale` is taking down.
    pub(super) fn replica_count(&self, service: &str) -> u32 {
        // Retiring instances are always the highest numbers.
        let instances = self.index.instances(service);
        let retiring = instances
            .iter()
            .rev()
            .take_while(|i| self.services.get(*i).is_some_and(|s| s.retiring))
            .count();
        (instances.len() - retiring) as u32
    }

    /// The settings an instance runs with: its service's.
    pub(super) fn settings(&self, name: &str) -> &ServiceConfig {
        self.config
            .template(name)
            .expect("every instance belongs to a service of the config")
    }

    /// The instances `names` stand for (every instance when empty): a
    /// service stands for all of its instances.
    pub(super) fn selection(&self, names: &[String]) -> Vec<String> {
        if names.is_empty() {
            return self.all_instances(self.index.order());
        }
        let mut selected = Vec::new();
        for name in names {
            if self.config.services.contains_key(name) {
                selected.extend(self.index.instances(name).iter().cloned());
            } else {
                selected.push(name.clone());
            }
        }
        selected
    }

    /// Every instance of `services`, service by service.
    pub(super) fn all_instances(&self, services: &[String]) -> Vec<String> {
        services
            .iter()
            .flat_map(|s| self.index.instances(s).iter().cloned())
            .collect()
    }

    /// What a start of `names` acts on, in dependency order: the named
    /// instances (all of a named service's), and every instance of the
    /// services they depend on.
    pub(super) fn start_set(&self, names: &[String]) -> Vec<String> {
        if names.is_empty() {
            return self.all_instances(self.index.order());
        }
        let mut whole: Vec<String> = Vec::new();
        let mut single: HashMap<&str, Vec<&String>> = HashMap::new();
        for name in names {
            if self.config.services.contains_key(name) {
                whole.push(name.clone());
            } else if let Some(runtime) = self.services.get(name) {
                single.entry(&*runtime.service).or_default().push(name);
            }
        }
        // What a single instance depends on starts whole, like any dependency.
        let mut roots = whole;
        for service in single.keys() {
            roots.extend(
                self.index
                    .dependencies(service)
                    .iter()
                    .map(|(d, _)| d.clone()),
            );
        }
        let closure: HashSet<String> = self.index.with_dependencies(&roots).into_iter().collect();
        let mut set: Vec<String> = Vec::new();
        for service in self.index.order() {
            if closure.contains(service) {
                set.extend(self.index.instances(service).iter().cloned());
            } else if let Some(named) = single.get_mut(service.as_str()) {
                named.sort_by_key(|n| self.services[*n].replica);
                named.dedup();
                set.extend(named.iter().map(|n| (*n).clone()));
            }
        }
        // Instances `kepler scale` is taking down do not start again.
        set.retain(|n| self.services.get(n).is_some_and(|s| !s.retiring));
        set
    }

    /// Every instance of the services that depend on `name`'s service.
    pub(super) fn dependent_instances(&self, name: &str) -> Vec<String> {
        let Some(runtime) = self.services.get(name) else {
            return Vec::new();
        };
        self.all_instances(self.index.dependents(&runtime.service))
    }
}
