//! After the daemon dies, the next one starts the services that were
//! running, exactly once.

use kepler_e2e::{group_alive, Kepler};
use nix::sys::signal::Signal;

fn count_processes_with_arg(arg: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn after_a_daemon_sigkill_running_services_are_respawned_exactly_once() {
    let mut kepler = Kepler::started();
    let marker_a = format!("1001{}", std::process::id());
    let marker_b = format!("1002{}", std::process::id());
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  a:\n    command: [sleep, '{marker_a}']\n  b:\n    command: [sleep, '{marker_b}']\n    depends_on: [a]\n  done:\n    command: [\"true\"]\n"
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_service("kepler.yaml", "done", "exited", |r| r.status() == "exited");
    let before = kepler.ps("kepler.yaml");
    let old_a = before["a"].pid().unwrap();

    kepler.signal_daemon(Signal::SIGKILL);
    kepler.reap_killed_daemon();
    // The services outlive the daemon...
    assert!(group_alive(old_a));
    kepler.start_daemon();
    // ...and the next daemon replaces them: one copy each, new pids.
    let a = kepler.wait_for_service("kepler.yaml", "a", "running again", |r| {
        r.status() == "running" && r.pid() != Some(old_a)
    });
    kepler.wait_for_service("kepler.yaml", "b", "running again", |r| {
        r.status() == "running"
    });
    assert!(!group_alive(old_a), "the old process group survived");
    assert_eq!(count_processes_with_arg(&marker_a), 1);
    assert_eq!(count_processes_with_arg(&marker_b), 1);
    assert!(a.pid().is_some());
    // A service that had already exited stays exited.
    assert_eq!(kepler.service("kepler.yaml", "done").status(), "stopped");
    kepler.kepler(&["stop"]).success();
    assert_eq!(count_processes_with_arg(&marker_a), 0);
}

#[test]
fn after_a_clean_daemon_stop_running_services_come_back() {
    let mut kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  a:\n    command: [sleep, '1000']\n  idle:\n    command: [sleep, '1000']\n",
    );
    kepler.kepler(&["start", "-d", "--wait", "a"]).success();
    let old = kepler.service("kepler.yaml", "a").pid().unwrap();
    kepler.signal_daemon(Signal::SIGTERM);
    assert_eq!(kepler.wait_daemon_exit(), Some(0));
    assert!(!group_alive(old), "a clean daemon stop stops the services");
    kepler.start_daemon();
    kepler.wait_for_service("kepler.yaml", "a", "running", |r| r.status() == "running");
    assert_eq!(kepler.service("kepler.yaml", "idle").status(), "stopped");
    kepler.kepler(&["stop"]).success();
}
