//! Limits the kernel enforces: `limits:` as cgroup files where the
//! controller is available to Kepler's subtree (a visible SKIP where it is
//! not, as on hybrid hosts whose memory, cpu and pids controllers belong to
//! cgroup v1), OOM kills reported, and limits that cannot be enforced named
//! in `daemon status` and the service's log.

use std::path::{Path, PathBuf};

use kepler_e2e::{cgroup_of, Containment, Kepler};

/// The daemon's subtree, from `kepler daemon status`.
fn subtree(kepler: &Kepler) -> PathBuf {
    let line = kepler.containment_line();
    let path = line
        .strip_prefix("containment: cgroup v2 at ")
        .unwrap_or_else(|| panic!("not in cgroup mode: {line}"));
    PathBuf::from(path)
}

/// Whether services get `controller` (listed in the subtree's
/// `cgroup.subtree_control`); if not, a visible SKIP with the daemon's
/// reason.
fn has_controller(kepler: &Kepler, controller: &str, test: &str) -> bool {
    let subtree = subtree(kepler);
    let enabled = std::fs::read_to_string(subtree.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == controller);
    if !enabled {
        let log = kepler.daemon_log();
        let why = log
            .lines()
            .find(|line| line.contains(&format!("controller={controller}")))
            .and_then(|line| line.split_once("services: "))
            .map_or("not enabled in its subtree", |(_, why)| {
                why.split(" controller=").next().unwrap_or(why)
            });
        eprintln!(
            "SKIP: {test}, because the {controller} controller is not available to Kepler's \
             cgroup v2 subtree {}: {why}",
            subtree.display()
        );
    }
    enabled
}

/// Starts `app` with `limits` (YAML lines under `limits:`) and returns the
/// directory of its cgroup.
fn service_cgroup_with(kepler: &Kepler, limits: &str) -> PathBuf {
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n    command: [sleep, '100000']\n    limits:\n{limits}"),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let pid = kepler.service("kepler.yaml", "app").pid().unwrap();
    cgroup_of(pid).unwrap()
}

fn read(cgroup: &Path, file: &str) -> String {
    std::fs::read_to_string(cgroup.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", cgroup.display()))
        .trim()
        .to_owned()
}

#[test]
fn limits_memory_sets_memory_max_without_swap_and_oom_kills_the_group() {
    let test = "memory.max";
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, test) else {
        return;
    };
    if !has_controller(&kepler, "memory", test) {
        return;
    }
    let cgroup = service_cgroup_with(&kepler, "      memory: 64M\n");
    assert_eq!(read(&cgroup, "memory.max"), "67108864");
    assert_eq!(read(&cgroup, "memory.oom.group"), "1");
    if cgroup.join("memory.swap.max").exists() {
        assert_eq!(read(&cgroup, "memory.swap.max"), "0");
    }
    // The cgroup limits the service as a whole, so no per-process rlimit.
    let pid = kepler.service("kepler.yaml", "app").pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let address_space = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap();
    assert!(address_space.contains("unlimited"), "{address_space}");
    assert!(!containment_line_notes(&kepler).contains("limits.memory"));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn limits_cpus_sets_cpu_max() {
    let test = "cpu.max";
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, test) else {
        return;
    };
    if !has_controller(&kepler, "cpu", test) {
        return;
    }
    let cgroup = service_cgroup_with(&kepler, "      cpus: 0.5\n");
    assert_eq!(read(&cgroup, "cpu.max"), "50000 100000");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn limits_pids_sets_pids_max() {
    let test = "pids.max";
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, test) else {
        return;
    };
    if !has_controller(&kepler, "pids", test) {
        return;
    }
    let cgroup = service_cgroup_with(&kepler, "      pids: 16\n");
    assert_eq!(read(&cgroup, "pids.max"), "16");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn an_oom_killed_service_says_so_and_its_restart_policy_applies() {
    let test = "OOM reporting";
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, test) else {
        return;
    };
    if !has_controller(&kepler, "memory", test) {
        return;
    }
    // awk doubles a string until the cgroup's 32M run out.
    kepler.write(
        "kepler.yaml",
        "services:\n  hog:\n    command: [awk, 'BEGIN { s = \"x\"; while (1) s = s s }']\n    \
         limits:\n      memory: 32M\n    restart:\n      policy: on-failure\n      \
         delay: 100ms\n      max_attempts: 1\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let row = kepler.wait_for_service("kepler.yaml", "hog", "given up on", |row| {
        row.status() == "failed"
    });
    assert_eq!(row.restarts(), 1, "{:?}", row.0);
    assert!(row.reason().contains("oom-killed"), "{:?}", row.0);
}

/// The `limits not enforced` lines of `kepler daemon status`.
fn containment_line_notes(kepler: &Kepler) -> String {
    let status = kepler.kepler(&["daemon", "status"]);
    status.success();
    status
        .stdout
        .lines()
        .skip_while(|line| !line.contains("limits not enforced"))
        .take_while(|line| !line.trim_start().starts_with("configs:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn limits_without_cgroups_are_named_once_in_daemon_status_and_the_service_log() {
    let Some(kepler) = Kepler::started_in(Containment::ProcessGroups, "unenforced limits") else {
        return;
    };
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [sleep, '100000']\n    limits:\n      memory: 256M\n      \
         cpus: 0.5\n      pids: 10\n",
    );
    let notes = containment_line_notes(&kepler);
    assert!(notes.is_empty(), "nothing loaded yet: {notes}");
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let notes = containment_line_notes(&kepler);
    for key in ["limits.memory", "limits.cpus", "limits.pids"] {
        let line = notes
            .lines()
            .find(|line| line.contains(key))
            .unwrap_or_else(|| panic!("no note for {key} in:\n{notes}"));
        assert!(line.contains("kepler.yaml: app: "), "{line}");
        assert!(line.contains("KEPLER_CGROUP=off"), "{line}");
    }
    // limits.memory stays a per-process address-space limit.
    let pid = kepler.service("kepler.yaml", "app").pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max address space") && l.contains("268435456")),
        "{limits}"
    );
    // The service's log says it once, however often it starts.
    kepler.kepler(&["restart", "-d", "--wait"]).success();
    let logs = kepler.wait_for_log("kepler.yaml", "limits.cpus is not enforced");
    for key in [
        "limits.memory applies",
        "limits.cpus is not",
        "limits.pids is not",
    ] {
        assert_eq!(logs.matches(key).count(), 1, "{key} in:\n{logs}");
    }
    kepler.kepler(&["stop"]).success();
}
