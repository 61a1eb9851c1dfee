//! Containment: keeping every process of a service, hook or probe where the
//! daemon can find and stop it, and the limits the kernel enforces on it.
//!
//! With a writable cgroup v2 hierarchy each service runs in a cgroup of its
//! own ([`tree`] shows the layout): a child that calls `setsid` or
//! double-forks stays in it, a stop reaches it, an OOM kill is reported, and
//! `limits:` become `memory.max`, `cpu.max`, `pids.max` and `io.weight`.
//! Without one (cgroup v1 hosts, containers without delegation, or
//! `KEPLER_CGROUP=off` in the daemon's environment) each service is its own
//! process group and session, as before cgroups: a process that leaves its
//! group escapes a stop, and only per-process rlimits apply.
//!
//! The mode is decided once, when the daemon starts ([`init`]), and is a
//! property of the whole process, like the reaper: [`current`] answers it
//! anywhere. Code that never called [`init`] (the in-process tests) runs in
//! process-group mode.

pub mod cgroup;
pub mod detect;
pub mod events;
pub mod limits;
pub mod removal;
pub mod tree;

use std::path::Path;
use std::sync::OnceLock;

pub use cgroup::{Cgroup, CgroupLimits, Controller, MemberList};
pub use events::{remove_when_empty, wait_empty, wait_no_members};
pub use limits::{plan_limits, LimitPlan};
pub use tree::{CgroupTree, ConfigCgroup};

/// The environment variable that turns cgroups off (`KEPLER_CGROUP=off`;
/// `0`, `false` and `no` too). Any other value leaves the choice to the
/// daemon.
pub const CGROUP_ENV: &str = "KEPLER_CGROUP";

/// How the daemon contains what it runs.
#[derive(Debug)]
pub enum Containment {
    /// One cgroup per service, hook run and probe, under this subtree.
    Cgroups(CgroupTree),
    /// One process group and session per process the daemon starts.
    ProcessGroups {
        /// Why cgroups are not used, for `kepler daemon status`.
        reason: String,
    },
}

static CONTAINMENT: OnceLock<Containment> = OnceLock::new();

/// Decides the mode for this process: cgroups when a writable v2
/// hierarchy is found (the daemon moves itself into its subtree), else
/// process groups with the reason. Call once, before any service starts,
/// from the process that will supervise them.
pub fn init(state_dir: &Path) -> &'static Containment {
    CONTAINMENT.get_or_init(|| {
        if let Ok(value) = std::env::var(CGROUP_ENV) {
            let off = ["off", "0", "false", "no"];
            if off.iter().any(|word| value.eq_ignore_ascii_case(word)) {
                return Containment::ProcessGroups {
                    reason: format!("{CGROUP_ENV}={value} in the daemon's environment"),
                };
            }
        }
        match CgroupTree::set_up(state_dir) {
            Ok(tree) => {
                tracing::info!(
                    cgroup = %tree.root().display(),
                    controllers = ?tree.controllers(),
                    "services run in cgroups of their own"
                );
                for (controller, why) in tree.missing() {
                    tracing::info!(%controller, "controller not available to services: {why}");
                }
                Containment::Cgroups(tree)
            }
            Err(tree::NoCgroups(reason)) => {
                tracing::warn!("no writable cgroup v2, using process groups: {reason}");
                Containment::ProcessGroups { reason }
            }
        }
    })
}

/// The mode [`init`] chose; process groups if it was never called.
pub fn current() -> &'static Containment {
    CONTAINMENT.get_or_init(|| Containment::ProcessGroups {
        reason: "containment was not set up in this process".into(),
    })
}

/// At a clean exit, after every service has stopped: removes the subtree
/// and returns the daemon to the cgroup it was started in.
pub fn tear_down() {
    if let Some(Containment::Cgroups(tree)) = CONTAINMENT.get() {
        removal::drain();
        tree.tear_down();
    }
}

impl Containment {
    /// The subtree, in cgroup mode.
    pub fn tree(&self) -> Option<&CgroupTree> {
        match self {
            Containment::Cgroups(tree) => Some(tree),
            Containment::ProcessGroups { .. } => None,
        }
    }

    /// One line for `kepler daemon status`.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroups(tree) => format!("cgroup v2 at {}", tree.root().display()),
            Containment::ProcessGroups { reason } => {
                format!("process groups (no writable cgroup v2: {reason})")
            }
        }
    }

    /// Whether services get `controller` (see [`Self::controller`] for why not).
    pub fn has(&self, controller: Controller) -> bool {
        self.tree()
            .is_some_and(|tree| tree.controllers().contains(&controller))
    }

    /// `Ok` when services get `controller`, else why not.
    pub fn controller(&self, controller: Controller) -> Result<(), String> {
        match self {
            Containment::Cgroups(_) if self.has(controller) => Ok(()),
            Containment::Cgroups(tree) => Err(tree
                .missing()
                .get(&controller)
                .cloned()
                .unwrap_or_else(|| format!("the {controller} controller is not enabled"))),
            Containment::ProcessGroups { reason } => {
                Err(format!("Kepler runs without cgroups ({reason})"))
            }
        }
    }
}
