//! Replicas and `kepler scale` through the real binaries: numbered instances
//! with their own processes, replica numbers in the environment, dependents
//! that wait for every replica, scaling up and down, the count across a
//! daemon restart and `recreate`, logs merged and selected, and acting on
//! one instance or all of them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use kepler_e2e::{Containment, Kepler, ServiceRow};

/// A replicated service whose every instance (and its `pre_start` hook)
/// writes its replica number and count to files of its own, says hello on
/// stdout, then sleeps.
fn replicated(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "  {name}:\n    replicas: {replicas}\n    command: [\"sh\", \"-c\", \"echo $KEPLER_REPLICA/$KEPLER_REPLICAS > {name}.$KEPLER_REPLICA; echo hello from {name} $KEPLER_REPLICA; exec sleep 1000\"]\n    hooks:\n      pre_start:\n        run: echo $KEPLER_REPLICA > hook.{name}.$KEPLER_REPLICA\n{extra}"
    )
}

fn running(row: &ServiceRow) -> bool {
    row.status() == "running"
}

/// The instances of `service` in `ps --json`, by replica number.
fn instances(kepler: &Kepler, file: &str, service: &str) -> BTreeMap<u64, ServiceRow> {
    kepler
        .ps(file)
        .into_values()
        .filter(|row| row.0["service"] == service && !row.0["replica"].is_null())
        .map(|row| (row.0["replica"].as_u64().unwrap(), row))
        .collect()
}

fn pids(rows: &BTreeMap<u64, ServiceRow>) -> Vec<i32> {
    rows.values().map(|r| r.pid().expect("a pid")).collect()
}

/// Waits until `service` has exactly `count` instances, all running.
fn wait_for_running(kepler: &Kepler, file: &str, service: &str, count: u64) {
    kepler_e2e::wait_until(
        &format!("{count} running instances of {service}"),
        kepler_e2e::DEADLINE,
        || {
            let rows = instances(kepler, file, service);
            rows.len() as u64 == count
                && rows.keys().copied().eq(1..=count)
                && rows.values().all(running)
        },
    );
}

#[test]
fn replicas_run_as_numbered_instances_each_with_its_own_process_and_number() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  plain:\n    command: [\"sh\", \"-c\", \"echo [$KEPLER_REPLICA] > plain.env; exec sleep 1000\"]\n",
            replicated("web", 3, "")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let web = instances(&kepler, "kepler.yaml", "web");
    assert_eq!(
        web.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{web:?}"
    );
    for (replica, row) in &web {
        assert!(running(row), "{:?}", row.0);
        assert_eq!(row.0["name"], format!("web.{replica}"));
    }
    let mut distinct = pids(&web);
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{web:?}");
    for replica in 1..=3 {
        assert_eq!(
            kepler.wait_for_file(&format!("web.{replica}")).trim(),
            format!("{replica}/3")
        );
        assert_eq!(
            kepler.wait_for_file(&format!("hook.web.{replica}")).trim(),
            replica.to_string()
        );
    }
    // A service without `replicas:` keeps its name and gets no number.
    let plain = kepler.service("kepler.yaml", "plain");
    assert!(plain.0["replica"].is_null() && plain.0["service"] == "plain");
    assert_eq!(kepler.wait_for_file("plain.env").trim(), "[]");
    // The table lists each instance.
    let table = kepler.kepler(&["ps"]);
    for name in ["web.1", "web.2", "web.3", "plain"] {
        table.success().stdout_has(name);
    }
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_dependent_waits_until_every_replica_is_healthy() {
    let kepler = Kepler::started();
    let health = "    healthcheck:\n      test: [\"CMD-SHELL\", \"test -e ready.$KEPLER_REPLICA\"]\n      interval: 100ms\n      retries: 1000\n";
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  api:\n    command: [\"sh\", \"-c\", \"touch api.started; exec sleep 1000\"]\n    depends_on:\n      web:\n        condition: service_healthy\n",
            replicated("web", 3, health)
        ),
    );
    fs::write(kepler.dir().join("ready.1"), "").unwrap();
    fs::write(kepler.dir().join("ready.2"), "").unwrap();
    kepler.kepler(&["start", "-d"]).success();
    // Replica 3's probe has failed several times while 1 and 2 are healthy:
    // the dependent is still waiting, and has not started.
    kepler.wait_for_service("kepler.yaml", "web.3", "probed and failing", |r| {
        r.0["health_failures"].as_u64() >= Some(3)
    });
    for replica in ["web.1", "web.2"] {
        kepler.wait_for_service("kepler.yaml", replica, "healthy", |r| {
            r.status() == "healthy"
        });
    }
    let api = kepler.service("kepler.yaml", "api");
    assert_eq!(api.status(), "starting", "{:?}", api.0);
    assert!(
        api.reason().contains("waiting for `web` to be healthy"),
        "{:?}",
        api.0
    );
    assert!(!kepler.dir().join("api.started").exists());
    // The last replica becomes healthy: now the dependent starts.
    fs::write(kepler.dir().join("ready.3"), "").unwrap();
    kepler.wait_for_service("kepler.yaml", "api", "running", running);
    let web3 = kepler.service("kepler.yaml", "web.3");
    assert_eq!(web3.status(), "healthy", "{:?}", web3.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn scale_adds_instances_and_removes_the_highest_keeping_their_logs() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", replicated("web", 1, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let first = kepler.service("kepler.yaml", "web.1").pid().unwrap();

    // Up: the new instances run by the time scale answers.
    kepler
        .kepler(&["scale", "web=4"])
        .success()
        .stdout_has("scaled web 1 → 4");
    let web = instances(&kepler, "kepler.yaml", "web");
    assert_eq!(web.len(), 4, "{web:?}");
    assert!(web.values().all(running), "{web:?}");
    assert_eq!(web[&1].pid(), Some(first), "scaling up leaves web.1 alone");
    let mut distinct = pids(&web);
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{web:?}");
    // New instances know the new count.
    assert_eq!(kepler.wait_for_file("web.4").trim(), "4/4");
    assert_eq!(kepler.wait_for_file("web.1").trim(), "1/1");

    // Down: the highest numbers stop and are gone; the others are untouched.
    let kept = pids(&web)[..2].to_vec();
    let removed = pids(&web)[2..].to_vec();
    kepler
        .kepler(&["scale", "web=2"])
        .success()
        .stdout_has("scaled web 4 → 2");
    let web = instances(&kepler, "kepler.yaml", "web");
    assert_eq!(web.keys().copied().collect::<Vec<_>>(), [1, 2], "{web:?}");
    assert_eq!(pids(&web), kept);
    for pid in removed {
        assert!(
            !kepler_e2e::group_alive(pid),
            "web.3/web.4 ({pid}) still run"
        );
    }

    // Logs of removed instances stay readable; `logs web` merges every
    // instance, `logs web.2` shows one.
    kepler.wait_for_log("kepler.yaml", "hello from web 4");
    let log_files: Vec<String> = fs::read_dir(kepler.state_dir().join("configs"))
        .unwrap()
        .flat_map(|config| fs::read_dir(config.unwrap().path().join("logs")).unwrap())
        .map(|file| file.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for replica in 1..=4 {
        let name = format!("web.{replica}.stdout.log");
        assert!(log_files.contains(&name), "no {name} in {log_files:?}");
    }
    let one = kepler.logs("kepler.yaml", &["web.4"]);
    assert!(one.contains("hello from web 4"), "{one}");
    assert!(!one.contains("hello from web 3"), "{one}");
    let merged = kepler.logs("kepler.yaml", &["web"]);
    for replica in 1..=4 {
        assert!(
            merged.contains(&format!("hello from web {replica}")),
            "{merged}"
        );
    }
    let selected = kepler.logs("kepler.yaml", &["web.2"]);
    assert!(selected.contains("hello from web 2"), "{selected}");
    assert!(!selected.contains("hello from web 1"), "{selected}");
    // `logs --json` names the service and the instance number apart.
    let json = kepler.logs("kepler.yaml", &["--json", "--no-hook", "web.3"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let hello = lines
        .iter()
        .find(|l| l["line"] == "hello from web 3")
        .unwrap_or_else(|| panic!("no hello in {json}"));
    assert_eq!(hello["replica"], 3, "{hello}");
    assert!(hello["service"] == "web", "{hello}");

    // Down to 0 and back: defined but not run, then run again.
    kepler
        .kepler(&["scale", "web=0"])
        .success()
        .stdout_has("scaled web 2 → 0");
    assert!(instances(&kepler, "kepler.yaml", "web").is_empty());
    kepler.kepler(&["scale", "web=2"]).success();
    wait_for_running(&kepler, "kepler.yaml", "web", 2);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn the_scaled_count_survives_a_daemon_restart_until_recreate() {
    let mut kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", replicated("web", 2, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.kepler(&["scale", "web=3"]).success();
    let before = pids(&instances(&kepler, "kepler.yaml", "web"));

    kepler.kepler(&["daemon", "stop"]).success();
    kepler.reap_killed_daemon();
    for pid in &before {
        assert!(!kepler_e2e::group_alive(*pid), "daemon stop stops {pid}");
    }
    kepler.start_daemon();
    wait_for_running(&kepler, "kepler.yaml", "web", 3);

    // recreate goes back to the config's count.
    kepler.kepler(&["stop"]).success();
    kepler.kepler(&["recreate"]).success();
    let web = instances(&kepler, "kepler.yaml", "web");
    assert_eq!(web.keys().copied().collect::<Vec<_>>(), [1, 2], "{web:?}");
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_running(&kepler, "kepler.yaml", "web", 2);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn one_instance_or_all_of_them_can_be_stopped_started_and_restarted() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", replicated("web", 3, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let before = pids(&instances(&kepler, "kepler.yaml", "web"));

    kepler.kepler(&["stop", "web.2"]).success();
    let web = instances(&kepler, "kepler.yaml", "web");
    assert_eq!(web[&2].status(), "stopped", "{web:?}");
    assert_eq!(web[&1].pid(), Some(before[0]));
    assert_eq!(web[&3].pid(), Some(before[2]));

    kepler.kepler(&["start", "-d", "--wait", "web.2"]).success();
    let web = instances(&kepler, "kepler.yaml", "web");
    assert!(running(&web[&2]), "{web:?}");
    assert_ne!(web[&2].pid(), Some(before[1]));

    kepler.kepler(&["restart", "-d", "--wait", "web"]).success();
    let after = pids(&instances(&kepler, "kepler.yaml", "web"));
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "{before:?} {after:?}"
    );

    kepler.kepler(&["stop", "web"]).success();
    let web = instances(&kepler, "kepler.yaml", "web");
    assert!(web.values().all(|r| r.status() == "stopped"), "{web:?}");

    // A number past the count is not an instance.
    kepler
        .kepler(&["start", "-d", "web.7"])
        .failure()
        .stderr_has("`web` has 3 replica(s)");
}

#[test]
fn a_service_scaled_to_zero_is_not_run_and_its_dependents_start() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  api:\n    command: [\"sleep\", \"1000\"]\n    depends_on:\n      worker:\n        condition: service_started\n",
            replicated("worker", 0, "")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_service("kepler.yaml", "api", "running", running);
    assert!(instances(&kepler, "kepler.yaml", "worker").is_empty());
    // Scaling up from 0 runs the new instances.
    kepler
        .kepler(&["scale", "worker=2"])
        .success()
        .stdout_has("scaled worker 0 → 2");
    wait_for_running(&kepler, "kepler.yaml", "worker", 2);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn scale_refuses_what_it_cannot_scale_with_a_clear_message() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  plain:\n    command: [\"sleep\", \"1000\"]\n",
            replicated("web", 1, "")
        ),
    );
    // Nothing is loaded yet: there is nothing to scale.
    kepler
        .kepler(&["scale", "web=2"])
        .failure()
        .stderr_has("nothing to scale")
        .stderr_has("is not loaded");
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler
        .kepler(&["scale", "nope=2"])
        .failure()
        .stderr_has("no service named `nope`")
        .stderr_has("services that can be scaled: web");
    kepler
        .kepler(&["scale", "plain=2"])
        .failure()
        .stderr_has("`plain` has no `replicas:`");
    kepler
        .kepler(&["scale", "web.1=2"])
        .failure()
        .stderr_has("scale the service: `kepler scale web=2`");
    kepler
        .kepler(&["scale", "web=1025"])
        .failure()
        .stderr_has("from 0 to 1024");
    kepler
        .kepler(&["scale", "web"])
        .failure()
        .stderr_has("SERVICE=COUNT");
    // Nothing was changed by the refused requests.
    let ps = kepler.ps("kepler.yaml");
    assert!(
        ps.contains_key("web.1") && !ps.contains_key("web.2"),
        "{ps:?}"
    );
}

#[test]
fn following_a_replicated_service_takes_in_instances_scale_adds() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{}  other:\n    command: [\"sh\", \"-c\", \"echo other line; exec sleep 1000\"]\n",
            replicated("web", 1, "")
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_log("kepler.yaml", "other line");
    kepler.wait_for_log("kepler.yaml", "hello from web 1");
    let mut follower = kepler
        .command("kepler")
        .args(["logs", "--follow", "--no-hook", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        lines
            .recv_timeout(kepler_e2e::DEADLINE)
            .expect("a followed line")
    };
    assert_eq!(next(), "web.1 | hello from web 1");
    kepler.kepler(&["scale", "web=2"]).success();
    assert_eq!(next(), "web.2 | hello from web 2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(follower.wait().unwrap().code(), Some(0));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_scale_that_does_not_finish_in_time_says_what_the_new_instances_wait_for() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  gate:\n    command: [\"sleep\", \"1000\"]\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-e\", \"gate.ok\"]\n      interval: 100ms\n      retries: 1000\n{}",
            replicated(
                "web",
                1,
                "    depends_on:\n      gate:\n        condition: service_healthy\n"
            )
        ),
    );
    kepler.kepler(&["start", "-d"]).success();
    kepler.wait_for_service("kepler.yaml", "web.1", "waiting", |r| {
        r.reason().contains("waiting for `gate`")
    });
    kepler
        .kepler(&["scale", "web=2", "--timeout", "300ms"])
        .failure()
        .stderr_has("timed out after 300ms waiting for the scale")
        .stderr_has("`web.2` (waiting for `gate` to be healthy)")
        .stderr_has("the new count is kept");
    // Once the dependency is healthy, both instances run.
    fs::write(kepler.dir().join("gate.ok"), "").unwrap();
    wait_for_running(&kepler, "kepler.yaml", "web", 2);
    kepler.kepler(&["stop"]).success();
}

/// Processes whose argv has `arg` as one of its words.
fn count_processes_with_arg(arg: &str) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn after_a_daemon_crash_each_instance_runs_exactly_once_at_the_scaled_count() {
    // Survivors are found through their cgroups, or by their recorded
    // process groups: both ways must know instances.
    for containment in [Containment::ProcessGroups, Containment::Cgroups] {
        let test = "after_a_daemon_crash_each_instance_runs_exactly_once";
        if let Some(kepler) = Kepler::started_in(containment, test) {
            crash_and_recover(kepler, containment);
        }
    }
}

fn crash_and_recover(mut kepler: Kepler, containment: Containment) {
    // Each instance sleeps for a number of its own, so its processes can be
    // counted: 100<replica><test pid>.
    let marker = |replica: u32| format!("100{replica}{}", std::process::id());
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  web:\n    replicas: 2\n    command: [\"sh\", \"-c\", \"exec sleep 100${{KEPLER_REPLICA}}{}\"]\n",
            std::process::id()
        ),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.kepler(&["scale", "web=3"]).success();
    let before = pids(&instances(&kepler, "kepler.yaml", "web"));
    assert_eq!(before.len(), 3);

    kepler.signal_daemon(nix::sys::signal::Signal::SIGKILL);
    kepler.reap_killed_daemon();
    kepler.start_daemon();
    kepler_e2e::wait_until("3 new instances", kepler_e2e::DEADLINE, || {
        let web = instances(&kepler, "kepler.yaml", "web");
        web.len() == 3
            && web
                .values()
                .all(|r| running(r) && !before.contains(&r.pid().unwrap_or(0)))
    });
    for pid in &before {
        assert!(!kepler_e2e::group_alive(*pid), "{pid} survived the crash");
    }
    for replica in 1..=3 {
        let count = count_processes_with_arg(&marker(replica));
        assert_eq!(count, 1, "web.{replica} ({containment:?})");
    }
    kepler.kepler(&["stop"]).success();
    for replica in 1..=3 {
        assert_eq!(
            count_processes_with_arg(&marker(replica)),
            0,
            "web.{replica}"
        );
    }
}
