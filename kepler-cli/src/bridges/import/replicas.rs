//! Several copies of one source entry (supervisord `numprocs`, pm2
//! `instances`, process-compose and compose `replicas`).
//!
//! Kepler has no `replicas:` key yet (issue #18), so each copy becomes a
//! numbered service: `web-1`, `web-2`, ... This is the only place that
//! decides it: once `replicas: N` exists, this function returns one service
//! carrying `replicas: N` instead.

use super::model::Service;

/// The services for `name` with one entry of `instances` per copy.
pub fn replica_services(name: &str, instances: Vec<Service>) -> Vec<(String, Service)> {
    if instances.len() == 1 {
        return instances
            .into_iter()
            .map(|service| (name.to_owned(), service))
            .collect();
    }
    instances
        .into_iter()
        .enumerate()
        .map(|(index, service)| (format!("{name}-{}", index + 1), service))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_numbered_from_one_and_a_single_copy_keeps_its_name() {
        let one = replica_services("web", vec![Service::default()]);
        assert_eq!(one[0].0, "web");
        let three = replica_services("web", vec![Service::default(); 3]);
        let names: Vec<&str> = three.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2", "web-3"]);
    }
}
