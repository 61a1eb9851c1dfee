//! Containment: nothing a service starts escapes a stop, wherever the daemon
//! can use cgroups; CPU and memory per service; the mode is reported.
//!
//! Each behaviour runs twice: with cgroups (skipped, visibly, where the
//! machine has no writable cgroup v2) and with process groups only
//! (`KEPLER_CGROUP=off`), where a process that calls `setsid` leaves the
//! service's group and escapes, as documented.

use std::path::{Path, PathBuf};

use kepler_e2e::{cgroup_of, pids_with_arg, wait_until, Containment, Kepler, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Runs `$test(Containment)` once per mode, as `$test::with_cgroups` and
/// `$test::with_process_groups`.
macro_rules! in_both_modes {
    ($test:ident) => {
        mod $test {
            #[test]
            fn with_cgroups() {
                super::$test(kepler_e2e::Containment::Cgroups)
            }
            #[test]
            fn with_process_groups() {
                super::$test(kepler_e2e::Containment::ProcessGroups)
            }
        }
    };
}

/// A number no other process has among its arguments: `sleep <marker>`
/// finds the process again.
fn marker(n: u32) -> String {
    format!("{n}{}", std::process::id())
}

/// A process found by a marker among its arguments. Checking the marker
/// as well as the pid keeps a recycled pid (the kernel wraps at 32768 on
/// many machines, and the suite starts thousands of processes) from
/// passing for a survivor.
#[derive(Debug, Clone, PartialEq)]
struct Marked {
    pid: i32,
    marker: String,
}

impl Marked {
    /// Waits until exactly one live process carries `marker`.
    fn running(marker: &str) -> Marked {
        // The pid comes from the same look as the count: a second look
        // could race a process that was just exec'ing or exiting.
        let mut pid = None;
        wait_until(&format!("one process with {marker}"), DEADLINE, || {
            pid = match pids_with_arg(marker)[..] {
                [one] => Some(one),
                _ => None,
            };
            pid.is_some()
        });
        Marked {
            pid: pid.expect("found by the wait"),
            marker: marker.to_owned(),
        }
    }

    fn alive(&self) -> bool {
        pids_with_arg(&self.marker).contains(&self.pid)
    }
}

/// Markers of the service's leader, its `setsid` child and its
/// double-forked child.
struct Markers {
    leader: String,
    setsid: String,
    forked: String,
}

impl Markers {
    fn new(test: u32) -> Markers {
        Markers {
            leader: marker(test * 10),
            setsid: marker(test * 10 + 1),
            forked: marker(test * 10 + 2),
        }
    }

    /// `app` starts one child that calls `setsid` (it leaves the service's
    /// process group and session) and one that double-forks (orphaned, it
    /// is reparented away from the service), then execs a long sleep.
    fn config(&self) -> String {
        let Markers {
            leader,
            setsid,
            forked,
        } = self;
        format!(
            "services:\n  app:\n    command: [sh, -c, 'setsid sleep {setsid} & (sleep {forked} &); exec sleep {leader}']\n"
        )
    }

    /// Waits for all three; returns (leader, setsid child, double-forked child).
    fn running(&self) -> (Marked, Marked, Marked) {
        (
            Marked::running(&self.leader),
            Marked::running(&self.setsid),
            Marked::running(&self.forked),
        )
    }
}

/// With cgroups the `setsid` child went with its service. Without, it
/// escaped (the documented limit of process groups): say so and kill it.
fn setsid_child_gone(mode: Containment, child: &Marked) {
    match mode {
        Containment::Cgroups => assert!(!child.alive(), "the setsid child {child:?} survived"),
        Containment::ProcessGroups => {
            eprintln!(
                "process-group mode: the setsid child {} left the service's group, so it \
                 outlives the service (documented); killing it",
                child.pid
            );
            if child.alive() {
                let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
            }
        }
    }
}

fn setsid_and_double_forked_processes_are_gone_after_stop(mode: Containment) {
    let Some(kepler) = Kepler::started_in(mode, "escapees gone after stop") else {
        return;
    };
    let markers = Markers::new(1);
    kepler.write("kepler.yaml", &markers.config());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let (leader, setsid, forked) = markers.running();
    assert_eq!(kepler.service("kepler.yaml", "app").pid(), Some(leader.pid));

    kepler.kepler(&["stop"]).success();
    assert!(!leader.alive(), "the service's leader survived");
    assert!(!forked.alive(), "the double-forked child survived");
    setsid_child_gone(mode, &setsid);
}
in_both_modes!(setsid_and_double_forked_processes_are_gone_after_stop);

fn setsid_and_double_forked_processes_are_gone_after_restart(mode: Containment) {
    let Some(kepler) = Kepler::started_in(mode, "escapees gone after restart") else {
        return;
    };
    let markers = Markers::new(2);
    kepler.write("kepler.yaml", &markers.config());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let (leader, setsid, forked) = markers.running();

    kepler.kepler(&["restart", "-d", "--wait"]).success();
    assert!(!leader.alive(), "the old leader survived the restart");
    assert!(!forked.alive(), "the old double-forked child survived");
    setsid_child_gone(mode, &setsid);
    // The new instance started its own.
    let (new_leader, new_setsid, new_forked) = markers.running();
    assert_ne!(new_leader.pid, leader.pid);
    kepler.kepler(&["stop"]).success();
    assert!(!new_leader.alive() && !new_forked.alive());
    setsid_child_gone(mode, &new_setsid);
}
in_both_modes!(setsid_and_double_forked_processes_are_gone_after_restart);

fn setsid_and_double_forked_processes_are_gone_after_a_daemon_sigkill_and_restart(
    mode: Containment,
) {
    let Some(mut kepler) = Kepler::started_in(mode, "escapees gone after a daemon crash") else {
        return;
    };
    let markers = Markers::new(3);
    kepler.write("kepler.yaml", &markers.config());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let (leader, setsid, forked) = markers.running();

    kepler.signal_daemon(Signal::SIGKILL);
    kepler.reap_killed_daemon();
    assert!(leader.alive() && setsid.alive() && forked.alive());
    kepler.start_daemon();
    // The next daemon kills the survivors before it starts the service again.
    kepler.wait_for_service("kepler.yaml", "app", "running again", |row| {
        row.status() == "running" && row.pid().is_some_and(|pid| pid != leader.pid)
    });
    assert!(!leader.alive(), "the old leader survived recovery");
    assert!(!forked.alive(), "the double-forked child survived recovery");
    setsid_child_gone(mode, &setsid);
    kepler.kepler(&["stop"]).success();
    for pid in pids_with_arg(&markers.setsid) {
        let child = Marked {
            pid,
            marker: markers.setsid.clone(),
        };
        setsid_child_gone(mode, &child);
    }
}
in_both_modes!(setsid_and_double_forked_processes_are_gone_after_a_daemon_sigkill_and_restart);

/// The daemon's subtree, from `kepler daemon status`.
fn subtree(kepler: &Kepler) -> PathBuf {
    let line = kepler.containment_line();
    let path = line
        .strip_prefix("containment: cgroup v2 at ")
        .unwrap_or_else(|| panic!("not in cgroup mode: {line}"));
    let subtree = PathBuf::from(path);
    assert_eq!(kepler.cgroup_subtree().as_deref(), Some(subtree.as_path()));
    subtree
}

#[test]
fn a_service_and_what_it_starts_run_in_the_services_own_cgroup() {
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, "a service's own cgroup") else {
        return;
    };
    let markers = Markers::new(4);
    kepler.write("kepler.yaml", &markers.config());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let (leader, setsid, forked) = markers.running();

    let own = cgroup_of(leader.pid).expect("the service's cgroup");
    assert_eq!(own.file_name().unwrap(), "app.service", "{}", own.display());
    assert_eq!(
        own.parent().and_then(Path::parent),
        Some(subtree(&kepler).as_path()),
        "{} is not in the daemon's subtree",
        own.display()
    );
    assert_eq!(cgroup_of(setsid.pid), Some(own.clone()));
    assert_eq!(cgroup_of(forked.pid), Some(own.clone()));
    // The daemon itself sits in a leaf beside the configs.
    let daemon_pid = kepler.daemon_pid().unwrap();
    assert_eq!(cgroup_of(daemon_pid), Some(subtree(&kepler).join("daemon")));

    kepler.kepler(&["stop"]).success();
    // Removed by the daemon's removal thread, just after the stop.
    wait_until(
        &format!("the empty cgroup {} to be removed", own.display()),
        DEADLINE,
        || !own.exists(),
    );
}

#[test]
fn a_hooks_processes_run_in_a_cgroup_of_their_own_and_go_with_it() {
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, "a hook's own cgroup") else {
        return;
    };
    let escapee = marker(51);
    let evidence = kepler.dir().join("hook-cgroup.txt");
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  app:\n    command: [sleep, '100000']\n    hooks:\n      pre_start:\n        run: \"grep ^0:: /proc/self/cgroup > {}; setsid sleep {escapee} &\"\n",
            evidence.display()
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let line = std::fs::read_to_string(&evidence).unwrap();
    let hook_cgroup = line.trim().strip_prefix("0::").unwrap();
    let name = Path::new(hook_cgroup)
        .file_name()
        .unwrap()
        .to_string_lossy();
    assert!(
        name.starts_with("app.pre_start-") && name.ends_with(".hook"),
        "the hook ran in {hook_cgroup}"
    );
    // Its leader exited before the service started; what it left running
    // went with it, the setsid child too, and so did its cgroup.
    assert!(
        pids_with_arg(&escapee).is_empty(),
        "the hook's setsid child survived the hook"
    );
    let leader = kepler.service("kepler.yaml", "app").pid().unwrap();
    let service_cgroup = cgroup_of(leader).unwrap();
    let hook_dir = service_cgroup.parent().unwrap().join(&*name);
    wait_until(
        &format!("{} to be removed", hook_dir.display()),
        DEADLINE,
        || !hook_dir.exists(),
    );
    kepler.kepler(&["stop"]).success();
    wait_for_no_leftover_cgroups(&kepler);
}

fn ps_shows_cpu_and_memory_per_service(mode: Containment) {
    let Some(kepler) = Kepler::started_in(mode, "CPU and MEM in ps") else {
        return;
    };
    kepler.write(
        "kepler.yaml",
        "services:\n  busy:\n    command: [sh, -c, 'while :; do :; done']\n  idle:\n    command: [sleep, '100000']\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // Rates are measured between two `ps`; wait until the busy loop has
    // had time to show. The machine is shared, so "high" is a fraction of
    // a CPU that even a loaded machine gives a busy loop.
    let start = std::time::Instant::now();
    let (busy, idle) = loop {
        let rows = kepler.ps("kepler.yaml");
        let (busy, idle) = (rows["busy"].clone(), rows["idle"].clone());
        let busy_enough = busy.cpu_percent().is_some_and(|cpu| cpu > 10.0)
            && busy.cpu_seconds().is_some_and(|s| s > 0.3);
        if busy_enough {
            break (busy, idle);
        }
        assert!(
            start.elapsed() < 2 * DEADLINE,
            "the busy loop never showed CPU use: {:?}",
            busy.0
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let idle_cpu = idle
        .cpu_percent()
        .expect("a running service has a CPU figure");
    assert!(idle_cpu < 2.0, "a sleeping service uses {idle_cpu}% CPU");
    assert!(idle.cpu_seconds().unwrap() < 0.2, "{:?}", idle.0);
    assert!(busy.memory_bytes().unwrap() > 0 && idle.memory_bytes().unwrap() > 0);

    let table = kepler.kepler(&["ps"]);
    table.success().stdout_has("CPU").stdout_has("MEM");
    let busy_line = table
        .stdout
        .lines()
        .find(|line| line.starts_with("busy"))
        .unwrap();
    assert!(busy_line.contains('%'), "{busy_line}");
    kepler.kepler(&["stop"]).success();
    // Stopped services have no figures.
    let rows = kepler.ps("kepler.yaml");
    assert_eq!(rows["busy"].cpu_percent(), None);
    assert_eq!(rows["busy"].memory_bytes(), None);
}
in_both_modes!(ps_shows_cpu_and_memory_per_service);

fn daemon_status_names_the_containment_mode(mode: Containment) {
    let Some(kepler) = Kepler::started_in(mode, "the containment line") else {
        return;
    };
    let line = kepler.containment_line();
    match mode {
        Containment::ProcessGroups => assert_eq!(
            line,
            "containment: process groups (no writable cgroup v2: KEPLER_CGROUP=off in the \
             daemon's environment)"
        ),
        Containment::Cgroups => {
            let subtree = subtree(&kepler);
            assert!(subtree.is_dir(), "{}", subtree.display());
            let name = subtree.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("kepler-"), "{name}");
            // A clean stop takes the subtree away with the daemon.
            kepler.kepler(&["daemon", "stop"]).success();
            assert!(
                !subtree.exists(),
                "{} survived the daemon",
                subtree.display()
            );
        }
    }
}
in_both_modes!(daemon_status_names_the_containment_mode);

#[test]
fn a_health_probe_runs_in_a_cgroup_of_its_own_and_leaves_nothing_behind() {
    let Some(kepler) = Kepler::started_in(Containment::Cgroups, "a probe's own cgroup") else {
        return;
    };
    let escapee = marker(61);
    let evidence = kepler.dir().join("probe-cgroup.txt");
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  app:\n    command: [sleep, '100000']\n    healthcheck:\n      test: [\"CMD-SHELL\", \"grep ^0:: /proc/self/cgroup > {}; setsid sleep {escapee} &\"]\n      interval: 100ms\n      timeout: 2s\n",
            evidence.display()
        ),
    );
    // Healthy means a probe ran to the end and its cgroup was emptied.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let line = std::fs::read_to_string(&evidence).unwrap();
    let name = Path::new(line.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("app.healthcheck-") && name.ends_with(".probe"),
        "the probe ran in {line}"
    );
    kepler.kepler(&["stop"]).success();
    assert!(
        pids_with_arg(&escapee).is_empty(),
        "a probe's setsid child survived"
    );
    wait_for_no_leftover_cgroups(&kepler);
}

/// Empty cgroups are removed just after the stop that emptied them.
fn wait_for_no_leftover_cgroups(kepler: &Kepler) {
    wait_until(
        &format!("no cgroup left below {}", subtree(kepler).display()),
        DEADLINE,
        || leftover_cgroups(kepler).is_empty(),
    );
}

/// Cgroups left below the daemon's config cgroups (none once everything
/// has stopped: empty cgroups are removed).
fn leftover_cgroups(kepler: &Kepler) -> Vec<PathBuf> {
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    subdirs(&subtree(kepler))
        .into_iter()
        .filter(|config| config.file_name().is_some_and(|n| n != "daemon"))
        .flat_map(|config| subdirs(&config))
        .collect()
}
