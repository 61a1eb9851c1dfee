//! Stopping: custom signals, grace periods, whole process groups.

use std::time::{Duration, Instant};

use kepler_e2e::{group_alive, process_alive, Kepler};

#[test]
fn stop_sends_the_requested_signal() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"trap 'echo usr1 > got.txt; exit 0' USR1; trap 'echo term > got.txt; exit 0' TERM; echo ok > ready; while :; do sleep 0.05; done\"]\n",
    );
    // `ready` is written once the traps are set: a signal sent earlier
    // would meet the shell's default action.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_file("ready");
    kepler.kepler(&["stop", "-s", "SIGUSR1"]).success();
    assert_eq!(kepler.wait_for_file("got.txt").trim(), "usr1");

    for file in ["got.txt", "ready"] {
        std::fs::remove_file(kepler.dir().join(file)).unwrap();
    }
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_file("ready");
    kepler.kepler(&["stop"]).success();
    assert_eq!(kepler.wait_for_file("got.txt").trim(), "term");
}

#[test]
fn stop_signal_from_the_config_is_used_by_default() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"trap 'echo int > got.txt; exit 0' INT; echo ok > ready; while :; do sleep 0.05; done\"]\n    stop_signal: SIGINT\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_file("ready");
    kepler.kepler(&["stop"]).success();
    assert_eq!(kepler.wait_for_file("got.txt").trim(), "int");
}

#[test]
fn a_service_ignoring_sigterm_is_killed_after_the_grace_period() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  stubborn:\n    command: [\"sh\", \"-c\", \"trap '' TERM; echo ok > ready; sleep 1000 & wait\"]\n    stop_grace_period: 300ms\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_file("ready");
    let pgid = kepler.service("kepler.yaml", "stubborn").pid().unwrap();
    let started = Instant::now();
    kepler.kepler(&["stop"]).success();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "stopped before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!group_alive(pgid), "a process of the group survived");
    let row = kepler.service("kepler.yaml", "stubborn");
    assert_eq!(row.status(), "stopped");
    assert!(row.reason().contains("killed"), "{:?}", row.0);
}

#[test]
fn a_background_grandchild_does_not_survive_stop() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  forker:\n    command: [\"sh\", \"-c\", \"sleep 1000 & echo $! > grandchild.pid; sleep 1000\"]\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let grandchild: i32 = kepler
        .wait_for_file("grandchild.pid")
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(grandchild));
    kepler.kepler(&["stop"]).success();
    assert!(
        !process_alive(grandchild),
        "the background grandchild survived"
    );
}

#[test]
fn a_leader_that_exits_takes_its_group_with_it() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  leaky:\n    command: [\"sh\", \"-c\", \"sleep 1000 & echo $! > orphan.pid; exit 0\"]\n",
    );
    kepler.kepler(&["start", "-d"]).success();
    let orphan: i32 = kepler.wait_for_file("orphan.pid").trim().parse().unwrap();
    kepler.wait_for_service("kepler.yaml", "leaky", "exited", |r| r.status() == "exited");
    assert!(!process_alive(orphan), "the orphan outlived its service");
}

#[test]
fn dependents_stop_before_their_dependencies() {
    let kepler = Kepler::started();
    // `ready.txt` says the trap is set: a stop before that would kill the
    // shell without a word.
    let script = |name: &str| {
        format!(
            "trap 'echo {name} >> stops.txt; exit 0' TERM; echo {name} >> ready.txt; \
             while :; do sleep 0.02; done"
        )
    };
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  db:\n    command: [\"sh\", \"-c\", \"{}\"]\n  api:\n    command: [\"sh\", \"-c\", \"{}\"]\n    depends_on: [db]\n  web:\n    command: [\"sh\", \"-c\", \"{}\"]\n    depends_on: [api]\n",
            script("db"),
            script("api"),
            script("web")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_lines("ready.txt", "three traps set", |l| l.len() == 3);
    kepler.kepler(&["stop"]).success();
    let stops = kepler.wait_for_lines("stops.txt", "three stops", |l| l.len() == 3);
    assert_eq!(stops, ["web", "api", "db"]);
}
