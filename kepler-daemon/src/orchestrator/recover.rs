//! After a daemon restart: kill whatever survived of the previous daemon's
//! services (through their cgroups where they had them, else by recorded
//! process group), then start again the ones that were wanted up, so no
//! service ever runs twice.

use std::collections::HashSet;
use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::Orchestrator;
use crate::containment::{self, tree::remove_tree, Cgroup};
use crate::persistence::ConfigState;
use crate::process;

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/pid/stat).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Processes whose process group is `pgid` and whose session is `pgid`
/// (services lead their own session), i.e. survivors of that service.
fn survivors(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    // state ppid pgrp session ...
                    let pgrp: i32 = fields.get(2)?.parse().ok()?;
                    let session: i32 = fields.get(3)?.parse().ok()?;
                    Some(pgrp == pgid && session == pgid)
                })
                .unwrap_or(false)
        })
}

/// Whether a process group read from `state.json` could be a service's:
/// above 1, within the kernel's pid range, and not the daemon's own group.
/// The state file is root's, but a bad value must never aim a SIGKILL.
fn plausible_group(pgid: i32) -> bool {
    let pid_max = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .unwrap_or(4_194_304);
    pgid > 1
        && pgid <= pid_max
        && pgid != std::process::id() as i32
        && pgid != nix::unistd::getpgrp().as_raw()
}

/// Kills what survived of the previous daemon's services and hooks and
/// waits until it is gone: everything in the config's cgroup (`cgroup`, when
/// the previous daemon ran in cgroup mode), and the recorded process groups
/// of services that had no cgroup. Only services of `config` (and
/// instances of its replicated ones) count, each
/// recorded group only once, and only plausible groups.
pub async fn kill_survivors(
    state: &ConfigState,
    config: &crate::config::BakedConfig,
    cgroup: Option<Cgroup>,
) {
    let (mut waits, contained) = kill_cgroups(cgroup, state);
    let mut seen = HashSet::new();
    for (name, service) in &state.services {
        // A service of the config, or an instance of one (`web.2`).
        if contained.contains(name) || config.instance_of(name).is_none() {
            continue;
        }
        let Some(pgid) = service.pgid.filter(|p| plausible_group(*p)) else {
            continue;
        };
        if !seen.insert(pgid) {
            continue;
        }
        let leader_is_ours = match (start_ticks(pgid), service.start_ticks) {
            (Some(now), Some(recorded)) => now == recorded,
            (Some(_), None) => false,
            // Leader gone: only its group's orphans can still hold the pgid.
            (None, _) => survivors(pgid),
        };
        if !leader_is_ours {
            continue;
        }
        tracing::warn!(
            service = name,
            pgid,
            "killing a process group left by the previous daemon"
        );
        let _ = process::signal_group(pgid, Signal::SIGKILL);
        waits.push(Box::pin(async move {
            let gone = tokio::time::timeout(SURVIVOR_TIMEOUT, process::wait_group_gone(pgid));
            if gone.await.is_err() {
                tracing::error!(pgid, "process group survived SIGKILL for 10s");
            }
        }));
    }
    futures::future::join_all(waits).await;
}

/// How long survivors may take to die before recovery goes on without them.
const SURVIVOR_TIMEOUT: Duration = Duration::from_secs(10);

type Wait = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Kills every populated cgroup below the config's and removes them all;
/// returns the waits and the services whose cgroup was found (their
/// recorded process group needs no check: the cgroup held all of it).
///
/// A cgroup empties when its processes exit, before their parent reaps
/// them; a leader recorded in `state` is also waited for until it is
/// reaped, so its pid is free again when recovery goes on.
fn kill_cgroups(config: Option<Cgroup>, state: &ConfigState) -> (Vec<Wait>, HashSet<String>) {
    let mut waits: Vec<Wait> = Vec::new();
    let mut contained = HashSet::new();
    let Some(config) = config else {
        return (waits, contained);
    };
    for child in config.children().unwrap_or_default() {
        let name = child
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let service = name.as_deref().and_then(|n| n.strip_suffix(".service"));
        if let Some(service) = service {
            contained.insert(service.to_string());
        }
        if !child.is_populated() {
            remove_tree(&child);
            continue;
        }
        let members = child.members().unwrap_or_default();
        let leader = service
            .and_then(|service| state.services.get(service)?.pgid)
            .filter(|pgid| members.contains(pgid));
        tracing::warn!(
            cgroup = %child.dir().display(),
            "killing processes left in their cgroup by the previous daemon"
        );
        if let Err(e) = child.kill_all() {
            tracing::error!(cgroup = %child.dir().display(), "cannot kill: {e}");
        }
        waits.push(Box::pin(async move {
            let gone = async {
                containment::wait_empty(&child).await;
                if let Some(leader) = leader {
                    process::wait_group_gone(leader).await;
                }
            };
            if tokio::time::timeout(SURVIVOR_TIMEOUT, gone).await.is_err() {
                tracing::error!(cgroup = %child.dir().display(), "survived SIGKILL for 10s");
            }
            remove_tree(&child);
        }));
    }
    (waits, contained)
}

impl Orchestrator {
    /// Starts again every service the saved state says was wanted up.
    pub fn resume(&mut self, state: &ConfigState) {
        let wanted: Vec<String> = self
            .all_instances(self.index.order())
            .into_iter()
            .filter(|name| state.services.get(name).is_some_and(|s| s.desired))
            .collect();
        if !wanted.is_empty() {
            tracing::info!(
                config = %self.config.config_file.display(),
                services = wanted.len(),
                "restarting services that were running before the daemon stopped"
            );
            self.start(&wanted);
        }
    }
}
