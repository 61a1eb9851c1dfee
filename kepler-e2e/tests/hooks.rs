//! Lifecycle hooks of services and of the whole config: when each runs, in
//! what order, what a failure or a timeout does, and where their output goes.
//!
//! Every hook appends its name to `events.txt`; services append `spawn` when
//! they start and `term` when they receive SIGTERM. `post_*` hooks run in the
//! background, so a test asserts only the order the daemon guarantees.

use std::fs;

use kepler_e2e::Kepler;

/// A hook appending `name` to events.txt.
fn hook(name: &str) -> String {
    format!("      {name}:\n        run: echo {name} >> events.txt\n")
}

/// A service that records its spawns and SIGTERMs in events.txt.
const RECORDING_SERVICE: &str = "    command: [\"sh\", \"-c\", \"trap 'echo term >> events.txt; exit 0' TERM; echo spawn >> events.txt; while :; do sleep 0.05; done\"]\n";

fn service_with_hooks(extra: &str, hooks: &[&str]) -> String {
    let mut yaml = format!("services:\n  app:\n{RECORDING_SERVICE}{extra}    hooks:\n");
    for name in hooks {
        yaml += &hook(name);
    }
    yaml
}

fn position(lines: &[String], what: &str) -> usize {
    lines
        .iter()
        .position(|l| l == what)
        .unwrap_or_else(|| panic!("no {what} in {lines:?}"))
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    lines.sort();
    lines
}

#[test]
fn on_init_then_pre_start_run_before_the_spawn_and_on_init_only_on_the_first_start() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &service_with_hooks("", &["on_init", "pre_start", "post_start"]),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let lines = kepler.wait_for_lines("events.txt", "first start", |l| l.len() == 4);
    assert_eq!(lines[..2], ["on_init", "pre_start"]);
    // post_start runs after the spawn but races the service's own first line.
    assert_eq!(sorted(&lines[2..]), ["post_start", "spawn"]);

    kepler.kepler(&["stop"]).success();
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let lines = kepler.wait_for_lines("events.txt", "second start", |l| l.len() == 8);
    assert_eq!(lines[4..6], ["term", "pre_start"]);
    assert_eq!(sorted(&lines[6..]), ["post_start", "spawn"]);
    assert_eq!(count(&lines, "on_init"), 1, "{lines:?}");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_user_stop_runs_pre_stop_before_the_signal_and_post_stop_after_it() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &service_with_hooks("", &["pre_stop", "post_stop", "post_exit"]),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // The trap is set once `spawn` is written.
    kepler.wait_for_lines("events.txt", "spawn", |l| l.len() == 1);
    kepler.kepler(&["stop"]).success();
    let lines = kepler.wait_for_lines("events.txt", "post_stop", |l| {
        l.iter().any(|x| x == "post_stop")
    });
    assert_eq!(lines, ["spawn", "pre_stop", "term", "post_stop"]);
}

#[test]
fn restart_of_a_service_runs_the_stop_hooks_then_the_start_hooks_and_post_restart() {
    let kepler = Kepler::started();
    let mut yaml = service_with_hooks(
        "",
        &[
            "pre_restart",
            "pre_stop",
            "pre_start",
            "post_start",
            "post_restart",
        ],
    );
    // Slow on purpose: what follows must wait for it, not overtake it.
    yaml += "      post_stop:\n        run: sleep 0.3; echo post_stop >> events.txt\n";
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_lines("events.txt", "first start", |l| l.len() == 3);
    kepler.kepler(&["restart", "-d", "--wait", "app"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the restart", |l| l.len() == 11);
    assert_eq!(
        lines[3..8],
        ["pre_restart", "pre_stop", "term", "post_stop", "pre_start"]
    );
    assert_eq!(sorted(&lines[8..]), ["post_restart", "post_start", "spawn"]);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn an_exit_runs_post_exit_and_the_automatic_restart_runs_the_restart_hooks() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo spawn >> events.txt; if [ -e once ]; then exec sleep 1000; fi; touch once; exit 3\"]\n    restart: on-failure\n    hooks:\n{}{}{}{}{}",
            // Slow on purpose: the restart must wait for it, not overtake it.
            "      post_exit:\n        run: sleep 0.3; echo post_exit >> events.txt\n",
            hook("pre_restart"),
            hook("pre_start"),
            hook("post_start"),
            hook("post_restart"),
        ),
    );
    kepler.kepler(&["start", "-d"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the restart", |l| {
        count(l, "spawn") == 2 && count(l, "post_restart") == 1 && count(l, "post_start") == 2
    });
    let first_spawn = position(&lines, "spawn");
    let post_exit = position(&lines, "post_exit");
    let pre_restart = position(&lines, "pre_restart");
    let second_pre_start = lines.iter().rposition(|l| l == "pre_start").unwrap();
    let second_spawn = lines.iter().rposition(|l| l == "spawn").unwrap();
    assert!(first_spawn < post_exit, "{lines:?}");
    assert!(
        post_exit < pre_restart,
        "post_exit ends before the restart: {lines:?}"
    );
    assert!(
        pre_restart < second_pre_start && second_pre_start < second_spawn,
        "{lines:?}"
    );
    assert!(
        position(&lines, "post_restart") > second_pre_start,
        "{lines:?}"
    );
    assert_eq!(count(&lines, "post_exit"), 1, "{lines:?}");
    let app = kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(app.restarts(), 1, "{:?}", app.0);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_failing_pre_start_fails_the_service_with_the_hook_exit_code_and_nothing_is_spawned() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n{RECORDING_SERVICE}    hooks:\n      pre_start:\n        run: exit 7\n"),
    );
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has("app");
    let app = kepler.wait_for_service("kepler.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(app.reason().contains("pre_start"), "{:?}", app.0);
    assert!(app.reason().contains("exited with code 7"), "{:?}", app.0);
    assert_eq!(app.pid(), None);
    assert!(!kepler.dir().join("events.txt").exists(), "the service ran");
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_counts_as_failed() {
    let kepler = Kepler::started();
    // A unique argument finds the hook's process.
    let marker = format!("1003{}", std::process::id());
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n{RECORDING_SERVICE}    hooks:\n      pre_start:\n        run: echo started > hook.txt; exec sleep {marker}\n        timeout: 300ms\n"),
    );
    kepler.kepler(&["start", "-d"]).success();
    let app = kepler.wait_for_service("kepler.yaml", "app", "failed", |r| r.status() == "failed");
    assert!(
        app.reason().contains("timed out after 300ms"),
        "{:?}",
        app.0
    );
    assert_eq!(kepler.wait_for_file("hook.txt").trim(), "started");
    kepler_e2e::wait_until("the hook's sleep to be gone", kepler_e2e::DEADLINE, || {
        !processes_with_arg(&marker)
    });
    assert!(!kepler.dir().join("events.txt").exists(), "the service ran");
}

fn processes_with_arg(arg: &str) -> bool {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            kepler_e2e::process_alive(pid)
                && fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
                    .unwrap_or(false)
        })
}

#[test]
fn a_failing_post_start_hook_is_logged_and_the_service_keeps_running() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    hooks:\n      post_start:\n        run: echo post-start-broke >&2; exit 4\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let pid = kepler.service("kepler.yaml", "app").pid();
    let logs = kepler.wait_for_log("kepler.yaml", "exited with code 4");
    assert!(
        logs.contains("app[post_start] | post-start-broke"),
        "{logs}"
    );
    let app = kepler.service("kepler.yaml", "app");
    assert_eq!(app.status(), "running", "{:?}", app.0);
    assert_eq!(app.pid(), pid);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn hook_output_is_tagged_in_the_logs_and_hidden_by_no_hook() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo hello-from-service; exec sleep 1000\"]\n    hooks:\n      pre_start:\n        run: echo hello-from-pre-start\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let logs = kepler.wait_for_log("kepler.yaml", "app | hello-from-service");
    assert!(
        logs.contains("app[pre_start] | hello-from-pre-start"),
        "{logs}"
    );
    let without = kepler.logs("kepler.yaml", &["--no-hook"]);
    assert!(without.contains("app | hello-from-service"), "{without}");
    assert!(!without.contains("hello-from-pre-start"), "{without}");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_hook_takes_its_own_command_working_dir_environment_and_env_file() {
    let kepler = Kepler::started();
    fs::create_dir(kepler.dir().join("hookdir")).unwrap();
    kepler.write("hook.env", "FROM_FILE=file\n");
    kepler.write(
        "kepler.yaml",
        r#"services:
  app:
    command: ["sleep", "1000"]
    environment: [FROM_SERVICE=svc]
    hooks:
      pre_start:
        command: ["sh", "-c", "echo \"$FROM_SERVICE $FROM_HOOK $FROM_FILE $(pwd)\" > hook-out.txt"]
        working_dir: ./hookdir
        environment: [FROM_HOOK=hook]
        env_file: hook.env
"#,
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let out = kepler.wait_for_file("hookdir/hook-out.txt");
    let hookdir = kepler.dir().join("hookdir");
    assert_eq!(out.trim(), format!("svc hook file {}", hookdir.display()));
    kepler.kepler(&["stop"]).success();
}

const GLOBAL_HOOKS: &[&str] = &[
    "on_init",
    "pre_start",
    "post_start",
    "pre_stop",
    "post_stop",
    "pre_restart",
    "post_restart",
    "pre_cleanup",
];

fn config_with_global_hooks() -> String {
    let mut yaml = String::from("kepler:\n  hooks:\n");
    for name in GLOBAL_HOOKS {
        yaml += &format!("    {name}:\n      run: echo global_{name} >> events.txt\n");
    }
    yaml + "services:\n  app:\n" + RECORDING_SERVICE
}

#[test]
fn global_hooks_surround_start_and_stop_and_clean_runs_pre_cleanup_last() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &config_with_global_hooks());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the start", |l| l.len() == 4);
    assert_eq!(lines[..2], ["global_on_init", "global_pre_start"]);
    assert_eq!(sorted(&lines[2..]), ["global_post_start", "spawn"]);

    // `stop` returns once post_stop has run.
    kepler.kepler(&["stop"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the stop", |l| l.len() == 7);
    assert_eq!(lines[4..], ["global_pre_stop", "term", "global_post_stop"]);

    // on_init ran once for this bake.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the second start", |l| l.len() == 10);
    assert_eq!(lines[7], "global_pre_start");
    assert_eq!(sorted(&lines[8..]), ["global_post_start", "spawn"]);
    kepler.kepler(&["stop", "--clean"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the last stop", |l| l.len() == 14);
    assert_eq!(
        lines[10..],
        [
            "global_pre_stop",
            "term",
            "global_post_stop",
            "global_pre_cleanup"
        ]
    );
}

#[test]
fn a_full_restart_runs_the_global_restart_hooks_not_the_start_hooks() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", &config_with_global_hooks());
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_lines("events.txt", "the start", |l| l.len() == 4);
    kepler.kepler(&["restart", "-d", "--wait"]).success();
    let lines = kepler.wait_for_lines("events.txt", "the restart", |l| l.len() == 8);
    assert_eq!(lines[4], "global_pre_restart");
    assert_eq!(lines[5], "term");
    assert_eq!(sorted(&lines[6..]), ["global_post_restart", "spawn"]);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_failing_global_pre_start_fails_the_start_and_starts_nothing() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!("kepler:\n  hooks:\n    pre_start:\n      run: echo not today >&2; exit 5\nservices:\n  app:\n{RECORDING_SERVICE}"),
    );
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has("pre_start");
    let app = kepler.service("kepler.yaml", "app");
    assert_eq!(app.status(), "stopped", "{:?}", app.0);
    assert_eq!(app.pid(), None);
    assert!(!kepler.dir().join("events.txt").exists(), "the service ran");
}

#[test]
fn on_init_is_remembered_across_daemon_restarts_and_runs_again_after_recreate() {
    let mut kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        &format!(
            "kepler:\n  hooks:\n    on_init:\n      run: echo global_on_init >> events.txt\nservices:\n  app:\n    command: [\"sleep\", \"1000\"]\n    hooks:\n{}{}",
            hook("on_init"),
            hook("pre_start")
        ),
    );
    let starts = |kepler: &Kepler, n: usize| {
        kepler.kepler(&["start", "-d", "--wait"]).success();
        let lines =
            kepler.wait_for_lines("events.txt", "pre_start", |l| count(l, "pre_start") == n);
        kepler.kepler(&["stop"]).success();
        (count(&lines, "global_on_init"), count(&lines, "on_init"))
    };
    assert_eq!(starts(&kepler, 1), (1, 1));

    kepler.kepler(&["daemon", "stop"]).success();
    kepler.wait_daemon_exit();
    kepler.start_daemon();
    assert_eq!(starts(&kepler, 2), (1, 1));

    kepler.kepler(&["recreate"]).success();
    assert_eq!(starts(&kepler, 3), (2, 2));
}

/// A config whose global on_init writes `init`, whose service's on_init
/// writes `service_init`, and whose pre_cleanup writes `cleanup`.
fn config_with_init_and_cleanup(init: &str) -> String {
    format!(
        "kepler:\n  hooks:\n    on_init:\n      run: echo {init} >> events.txt\n    pre_cleanup:\n      run: echo cleanup >> events.txt\nservices:\n  app:\n    command: [\"sleep\", \"1000\"]\n    hooks:\n      on_init:\n        run: echo service_init >> events.txt\n"
    )
}

#[test]
fn stop_clean_undoes_the_config_so_the_next_start_bakes_it_afresh_and_inits_again() {
    let kepler = Kepler::started();
    let configs = kepler.state_dir().join("configs");
    let stored = || fs::read_dir(&configs).map_or(0, |dir| dir.count());
    kepler.write("kepler.yaml", &config_with_init_and_cleanup("init"));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let first_clean = kepler.kepler(&["stop", "--clean"]);
    first_clean.success();
    // The file changed meanwhile: the next start bakes it again.
    kepler.write("kepler.yaml", &config_with_init_and_cleanup("init_again"));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler
        .kepler(&["daemon", "status"])
        .success()
        .stdout_has("kepler.yaml");
    kepler.kepler(&["stop", "--clean"]).success();
    let lines = kepler.wait_for_lines("events.txt", "two cleanups", |l| {
        l.iter().filter(|x| *x == "cleanup").count() == 2
    });
    assert_eq!(
        lines,
        [
            "init",
            "service_init",
            "cleanup",
            "init_again",
            "service_init",
            "cleanup"
        ]
    );
    first_clean.stdout_has("removed the config's stored state");
    assert_eq!(stored(), 0, "the config's state is gone");
    let status = kepler.kepler(&["daemon", "status"]);
    assert!(!status.success().stdout.contains("kepler.yaml"), "{status}");

    // Cleanup is for the whole config, never for some of its services.
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler
        .kepler(&["stop", "--clean", "app"])
        .failure()
        .stderr_has("--clean applies to the whole config");
    assert_eq!(kepler.service("kepler.yaml", "app").status(), "running");
    assert_eq!(stored(), 1);
    kepler.kepler(&["stop"]).success();
}
