//! `kepler run`: exit codes, --abort-on-failure, --exit-code-from, state
//! removed (or kept), a fresh bake every time, one run of a config at once.

use std::fs;
use std::process::Stdio;

use kepler_e2e::{process_alive, wait_until, Kepler, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Configs with stored state in the daemon's state directory.
fn configs_in(kepler: &Kepler) -> usize {
    fs::read_dir(kepler.state_dir().join("configs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn wait_for_no_state(kepler: &Kepler) {
    wait_until("the run's state to be removed", DEADLINE, || {
        configs_in(kepler) == 0
    });
}

/// The pid a service wrote to `file` in the scratch dir.
fn pid_in(kepler: &Kepler, file: &str) -> i32 {
    kepler.wait_for_file(file).trim().parse().unwrap()
}

/// A service that records its pid and runs until stopped.
const SERVER: &str = "  server:\n    command: [\"sh\", \"-c\", \"echo $$ > server.pid; echo server up; exec sleep 1000\"]\n";

#[test]
fn a_run_whose_services_all_end_well_exits_0_and_leaves_no_state() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  migrate:\n    command: [\"sh\", \"-c\", \"echo migrated\"]\n  job:\n    command: [\"sh\", \"-c\", \"echo job done\"]\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n",
    );
    let run = kepler.kepler(&["run"]);
    run.success()
        .stdout_has("migrate | migrated")
        .stdout_has("job | job done")
        .stdout_has("kepler | job exited (0)");
    assert_eq!(configs_in(&kepler), 0, "{run}");
}

#[test]
fn a_run_exits_with_the_code_of_the_first_service_that_failed() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  bad:\n    command: [\"sh\", \"-c\", \"echo failing; exit 3\"]\n  later:\n    command: [\"sh\", \"-c\", \"exit 9\"]\n    depends_on:\n      bad:\n        condition: service_failed\n  fine:\n    command: [\"sh\", \"-c\", \"exit 0\"]\n",
    );
    let run = kepler.kepler(&["run"]);
    assert_eq!(run.code, Some(3), "{run}");
    run.stdout_has("bad | failing")
        .stdout_has("kepler | later exited (9)")
        .stderr_has("exit code 3: `bad` exited (3)");
    assert_eq!(configs_in(&kepler), 0);

    // A service that cannot even start counts as 1, and so do its dependents.
    kepler.write(
        "kepler.yaml",
        "services:\n  api:\n    command: [\"./no-such-server\"]\n  web:\n    command: [\"sh\", \"-c\", \"exit 0\"]\n    depends_on: [api]\n",
    );
    let run = kepler.kepler(&["run"]);
    assert_eq!(run.code, Some(1), "{run}");
    run.stderr_has("`api` failed").stderr_has("no-such-server");
    assert_eq!(configs_in(&kepler), 0);
}

#[test]
fn abort_on_failure_stops_the_other_services_at_the_first_failure() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n{SERVER}  checker:\n    command: [\"sh\", \"-c\", \"echo checking; exit 4\"]\n    depends_on: [server]\n"
        ),
    );
    let run = kepler.kepler(&["run", "--abort-on-failure"]);
    assert_eq!(run.code, Some(4), "{run}");
    run.stdout_has("server | server up")
        .stdout_has("checker | checking")
        .stdout_has("stopping every service (--abort-on-failure)")
        .stdout_has("kepler | server stopped");
    assert!(!process_alive(pid_in(&kepler, "server.pid")));
    assert_eq!(configs_in(&kepler), 0);
}

#[test]
fn exit_code_from_propagates_the_test_runners_code_and_the_server_runs_until_then() {
    let kepler = Kepler::started();
    for (code, expected) in [("5", Some(5)), ("0", Some(0))] {
        kepler.write(
            "kepler.yaml",
            &format!(
                "services:\n{SERVER}  tests:\n    command: [\"sh\", \"-c\", \"until [ -s server.pid ]; do sleep 0.01; done; kill -0 $(cat server.pid) && echo server is up; exit {code}\"]\n    depends_on: [server]\n"
            ),
        );
        let run = kepler.kepler(&["run", "--exit-code-from", "tests"]);
        assert_eq!(run.code, expected, "{run}");
        run.stdout_has("tests | server is up")
            .stdout_has("stopping every service (--exit-code-from tests)")
            .stdout_has("kepler | server stopped");
        assert!(!process_alive(pid_in(&kepler, "server.pid")));
        assert_eq!(configs_in(&kepler), 0);
        fs::remove_file(kepler.dir().join("server.pid")).unwrap();
    }
    // Naming only the server still runs the tests.
    let run = kepler.kepler(&["run", "--exit-code-from", "tests", "server"]);
    assert_eq!(run.code, Some(0), "{run}");
    run.stdout_has("tests | server is up");
    kepler
        .kepler(&["run", "--exit-code-from", "tets"])
        .failure()
        .stderr_has("--exit-code-from names no service")
        .stderr_has("tests");
    assert_eq!(configs_in(&kepler), 0);
}

#[test]
fn keep_state_keeps_the_config_and_its_logs() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"echo kept line\"]\n",
    );
    kepler.kepler(&["run", "--keep-state"]).success();
    assert_eq!(configs_in(&kepler), 1);
    assert!(kepler.logs("kepler.yaml", &[]).contains("job | kept line"));
    assert_eq!(kepler.service("kepler.yaml", "job").status(), "exited");
}

#[test]
fn every_run_bakes_the_file_afresh_without_recreate() {
    let kepler = Kepler::started();
    let job = |word: &str| {
        format!("services:\n  job:\n    command: [\"sh\", \"-c\", \"echo version $V {word}\"]\n    environment:\n      - V=${{V:-none}}\n")
    };
    kepler.write("kepler.yaml", &job("one"));
    // A config that `start` baked and ran before...
    kepler
        .kepler(&["start"])
        .success()
        .stdout_has("version none one");
    kepler.write("kepler.yaml", &job("two"));
    // ... and its environment, are read again by the run.
    let run = kepler.run_with_env(&["run", "--keep-state"], &[("V", "7")]);
    run.success().stdout_has("job | version 7 two");
    kepler.write("kepler.yaml", &job("three"));
    kepler
        .kepler(&["run"])
        .success()
        .stdout_has("job | version none three");
    assert_eq!(configs_in(&kepler), 0);
}

#[test]
fn a_second_run_or_a_start_is_refused_while_a_run_holds_the_config() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &format!("services:\n{SERVER}"));
    kepler
        .kepler(&["run", "-d"])
        .success()
        .stdout_has("their state is removed once they have all ended");
    let pid = pid_in(&kepler, "server.pid");
    kepler
        .kepler(&["run"])
        .failure()
        .stderr_has("is already active");
    kepler
        .kepler(&["start", "-d"])
        .failure()
        .stderr_has("cannot start")
        .stderr_has("an active `kepler run`");
    kepler
        .kepler(&["recreate"])
        .failure()
        .stderr_has("an active `kepler run`");
    // `stop` ends the run, which then removes its state.
    kepler.kepler(&["stop"]).success();
    assert!(!process_alive(pid));
    wait_for_no_state(&kepler);
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"echo free again\"]\n",
    );
    kepler.kepler(&["run"]).success().stdout_has("free again");
}

#[test]
fn a_run_is_refused_while_services_started_with_start_are_up() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &format!("services:\n{SERVER}"));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler
        .kepler(&["run"])
        .failure()
        .stderr_has("cannot run")
        .stderr_has("stop them first");
    assert_eq!(
        kepler.service("kepler.yaml", "server").status(),
        "running",
        "the refused run left the services alone"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn wait_returns_once_started_and_the_run_ends_in_the_background() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"until [ -f go ]; do sleep 0.02; done\"]\n",
    );
    kepler
        .kepler(&["run", "-d", "--wait"])
        .success()
        .stdout_has("started 1 service (job)");
    assert_eq!(configs_in(&kepler), 1);
    kepler.write("go", "");
    wait_for_no_state(&kepler);
}

#[test]
fn ctrl_c_ends_the_run_with_0_and_a_vanished_client_ends_it_too() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &format!("services:\n{SERVER}"));
    for signal in [Signal::SIGINT, Signal::SIGKILL] {
        let _ = fs::remove_file(kepler.dir().join("server.pid"));
        let mut client = kepler
            .command("kepler")
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = pid_in(&kepler, "server.pid");
        kill(Pid::from_raw(client.id() as i32), signal).unwrap();
        let status = client.wait().unwrap();
        if signal == Signal::SIGINT {
            assert_eq!(status.code(), Some(0), "stopped by the user is a success");
        }
        wait_until(
            &format!("the server to be stopped after {signal}"),
            DEADLINE,
            || !process_alive(pid),
        );
        wait_for_no_state(&kepler);
    }
}

#[test]
fn a_member_runs_its_own_config_and_nobody_elses() {
    let kepler = Kepler::started();
    let member = kepler_e2e::TestUser::member();
    kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"echo as $(id -u)\"]\n",
    );
    let run = kepler.kepler_as(&member, &["-f", "mine.yaml", "run"]);
    run.success()
        .stdout_has(&format!("job | as {}", member.uid));
    assert_eq!(configs_in(&kepler), 0);
    kepler.write(
        "roots.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"echo root's\"]\n",
    );
    kepler
        .kepler_as(&member, &["-f", "roots.yaml", "run"])
        .failure()
        .stderr_has("not found or not yours");
    assert_eq!(configs_in(&kepler), 0);
}
