//! A service's `limits:` split between what its cgroup enforces and what
//! stays a per-process rlimit, with a note for each limit that cannot be
//! enforced as configured.
//!
//! `limits.memory` becomes `memory.max` (with `memory.swap.max` 0 unless
//! `limits.swap` says otherwise, and `memory.oom.group` so an OOM kill takes
//! the service as a whole) where the memory controller is available, and
//! stays `RLIMIT_AS` where it is not. `cpus`, `pids` and `io_weight` exist
//! only as cgroup limits. `cpu_time` and `max_fds` are rlimits everywhere.

use super::cgroup::{CgroupLimits, Controller};
use super::Containment;
use crate::config::Limits;
use crate::process::ResourceLimits;

/// How one service's limits are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitPlan {
    /// Written to the service's cgroup (only in cgroup mode).
    pub cgroup: CgroupLimits,
    /// Set in the child before exec.
    pub rlimits: ResourceLimits,
    /// One sentence per limit not enforced as configured, naming the key.
    pub notes: Vec<String>,
}

/// Splits `limits` for the controllers `containment` offers.
pub fn plan_limits(limits: &Limits, containment: &Containment) -> LimitPlan {
    let mut plan = LimitPlan {
        rlimits: ResourceLimits {
            memory_bytes: None,
            cpu_time_secs: limits.cpu_time,
            max_fds: limits.max_fds,
        },
        ..LimitPlan::default()
    };
    let memory = containment.controller(Controller::Memory);
    match (&memory, limits.memory) {
        (Ok(()), Some(bytes)) => {
            plan.cgroup.memory_max = Some(bytes.bytes());
            plan.cgroup.oom_group = true;
            plan.cgroup.swap_max = Some(limits.swap.map_or(0, |s| s.bytes()));
        }
        (Ok(()), None) => plan.cgroup.swap_max = limits.swap.map(|s| s.bytes()),
        (Err(why), Some(bytes)) => {
            plan.rlimits.memory_bytes = Some(bytes.bytes());
            plan.notes.push(format!(
                "limits.memory applies to each process's address space (RLIMIT_AS), not to \
                 the service as a whole: {why}"
            ));
        }
        (Err(_), None) => {}
    }
    if let (Err(why), Some(_)) = (&memory, limits.swap) {
        plan.notes
            .push(format!("limits.swap is not enforced: {why}"));
    }
    if let Some(cpus) = limits.cpus {
        match containment.controller(Controller::Cpu) {
            Ok(()) => plan.cgroup.cpu_max = Some(cpus.quota_and_period()),
            Err(why) => plan
                .notes
                .push(format!("limits.cpus is not enforced: {why}")),
        }
    }
    if let Some(pids) = limits.pids {
        match containment.controller(Controller::Pids) {
            Ok(()) => plan.cgroup.pids_max = Some(pids),
            Err(why) => plan
                .notes
                .push(format!("limits.pids is not enforced: {why}")),
        }
    }
    if let Some(weight) = limits.io_weight {
        match containment.controller(Controller::Io) {
            Ok(()) => plan.cgroup.io_weight = Some(weight),
            Err(why) => plan
                .notes
                .push(format!("limits.io_weight is not enforced: {why}")),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, CpuCount};

    fn all_limits() -> Limits {
        Limits {
            memory: Some(ByteSize(256 << 20)),
            cpu_time: Some(60),
            max_fds: Some(1024),
            swap: None,
            cpus: Some("0.5".parse::<CpuCount>().unwrap()),
            pids: Some(64),
            io_weight: Some(500),
        }
    }

    #[test]
    fn without_cgroups_memory_stays_an_rlimit_and_the_rest_is_noted() {
        let containment = Containment::ProcessGroups {
            reason: "KEPLER_CGROUP=off in the daemon's environment".into(),
        };
        let plan = plan_limits(&all_limits(), &containment);
        assert_eq!(plan.cgroup, CgroupLimits::default());
        assert_eq!(plan.rlimits.memory_bytes, Some(256 << 20));
        assert_eq!(plan.rlimits.cpu_time_secs, Some(60));
        assert_eq!(plan.rlimits.max_fds, Some(1024));
        let keys: Vec<&str> = plan
            .notes
            .iter()
            .map(|n| n.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "limits.memory",
                "limits.cpus",
                "limits.pids",
                "limits.io_weight"
            ]
        );
        assert!(
            plan.notes[1].ends_with("(KEPLER_CGROUP=off in the daemon's environment)"),
            "{}",
            plan.notes[1]
        );
    }

    #[test]
    fn with_controllers_the_cgroup_enforces_what_it_can() {
        let missing = [(
            Controller::Io,
            "the io controller is not available".to_string(),
        )];
        let tree = super::super::CgroupTree::fake(
            "/sys/fs/cgroup/kepler-x".into(),
            &[Controller::Memory, Controller::Cpu, Controller::Pids],
            missing.into_iter().collect(),
        );
        let plan = plan_limits(&all_limits(), &Containment::Cgroups(tree));
        assert_eq!(
            plan.cgroup,
            CgroupLimits {
                memory_max: Some(256 << 20),
                swap_max: Some(0),
                oom_group: true,
                cpu_max: Some((50_000, 100_000)),
                pids_max: Some(64),
                io_weight: None,
            }
        );
        assert_eq!(
            plan.rlimits.memory_bytes, None,
            "no RLIMIT_AS under memory.max"
        );
        assert_eq!(
            plan.notes,
            ["limits.io_weight is not enforced: the io controller is not available"]
        );
        let swap = Limits {
            swap: Some(ByteSize(1 << 30)),
            ..all_limits()
        };
        let tree =
            super::super::CgroupTree::fake("/x".into(), &[Controller::Memory], Default::default());
        let plan = plan_limits(&swap, &Containment::Cgroups(tree));
        assert_eq!(plan.cgroup.swap_max, Some(1 << 30));
    }

    #[test]
    fn no_limits_means_no_notes() {
        let containment = Containment::ProcessGroups { reason: "x".into() };
        let plan = plan_limits(&Limits::default(), &containment);
        assert!(plan.notes.is_empty());
        assert_eq!(plan.rlimits, ResourceLimits::default());
    }
}
