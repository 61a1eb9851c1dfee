//! Baked snapshots, recreate, prune and check, through the real binaries.

use std::fs;

use kepler_e2e::Kepler;

const GREETER: &str = r#"
services:
  greeter:
    command: ["sh", "-c", "echo \"$GREETING\" > greeting.txt; sleep 1000"]
    environment:
      - GREETING=${GREETING:-nobody}
"#;

fn configs_in(kepler: &Kepler) -> usize {
    fs::read_dir(kepler.state_dir().join("configs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn the_snapshot_is_used_until_recreate_even_if_the_file_and_env_change() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", GREETER);
    kepler
        .run_with_env(&["start", "-d", "--wait"], &[("GREETING", "first")])
        .success();
    assert_eq!(kepler.wait_for_file("greeting.txt").trim(), "first");
    kepler.kepler(&["stop"]).success();
    fs::remove_file(kepler.dir().join("greeting.txt")).unwrap();

    // Edit the source and the environment: the baked snapshot still rules.
    kepler.write(
        "kepler.yaml",
        &GREETER.replace("greeting.txt", "edited.txt"),
    );
    kepler
        .run_with_env(&["start", "-d", "--wait"], &[("GREETING", "second")])
        .success();
    assert_eq!(kepler.wait_for_file("greeting.txt").trim(), "first");
    assert!(!kepler.dir().join("edited.txt").exists());

    // Recreate is refused while running, then rebakes with the new env.
    kepler
        .run_with_env(&["recreate"], &[("GREETING", "second")])
        .failure()
        .stderr_has("stop them first");
    kepler.kepler(&["stop"]).success();
    kepler
        .run_with_env(&["recreate"], &[("GREETING", "second")])
        .success();
    // Recreate starts nothing.
    assert_eq!(kepler.service("kepler.yaml", "greeter").status(), "stopped");
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert_eq!(kepler.wait_for_file("edited.txt").trim(), "second");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn the_state_dir_holds_the_copy_the_snapshot_and_the_source_path() {
    let kepler = Kepler::started();
    let source = kepler.write("kepler.yaml", GREETER);
    kepler.write(".env", "A=1\n");
    kepler.write("kepler.yaml", &format!("{GREETER}    env_file: .env\n"));
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let dir = fs::read_dir(kepler.state_dir().join("configs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in [
        "config.yaml",
        "expanded_config.yaml",
        "source_path.txt",
        "state.json",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{file} missing in {}",
            dir.display()
        );
    }
    assert_eq!(
        fs::read_to_string(dir.join("source_path.txt")).unwrap(),
        fs::canonicalize(&source).unwrap().to_string_lossy()
    );
    assert_eq!(fs::read_dir(dir.join("env_files")).unwrap().count(), 1);
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["services"]["greeter"]["desired"], true);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn prune_dry_run_deletes_nothing_and_prune_removes_stopped_configs() {
    let kepler = Kepler::started();
    kepler.write("a/kepler.yaml", GREETER);
    kepler.write("b/kepler.yaml", GREETER);
    kepler
        .kepler(&["-f", "a/kepler.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler(&["-f", "b/kepler.yaml", "start", "-d", "--wait"])
        .success();
    kepler.kepler(&["-f", "b/kepler.yaml", "stop"]).success();
    assert_eq!(configs_in(&kepler), 2);

    kepler
        .kepler(&["prune", "--dry-run"])
        .success()
        .stdout_has("would remove")
        .stdout_has("kept");
    assert_eq!(configs_in(&kepler), 2);

    kepler.kepler(&["prune"]).success().stdout_has("removed");
    assert_eq!(configs_in(&kepler), 1, "only the running config stays");
    assert_eq!(
        kepler.service("a/kepler.yaml", "greeter").status(),
        "running"
    );

    kepler.kepler(&["prune", "--force"]).success();
    assert_eq!(configs_in(&kepler), 0);
}

#[test]
fn check_prints_the_baked_config_or_every_error_with_its_line() {
    let kepler = Kepler::new();
    kepler.write("kepler.yaml", GREETER);
    kepler
        .kepler(&["check"])
        .success()
        .stdout_has("greeter:")
        .stdout_has("GREETING: nobody");
    kepler.write(
        "bad.yaml",
        "services:\n  web:\n    comand: [x]\n  db:\n    command: [y]\n    depends_on: [nope]\n",
    );
    kepler
        .kepler(&["-f", "bad.yaml", "check"])
        .failure()
        .stderr_has("bad.yaml:3:5")
        .stderr_has("did you mean `command`")
        .stderr_has("bad.yaml:6")
        .stderr_has("nope");
    // No daemon was involved and nothing was written.
    assert!(!kepler.state_dir().exists());
}

#[test]
fn an_invalid_config_is_refused_with_its_errors_and_leaves_no_state() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [sleep, '1']\n    restart: sometimes\n",
    );
    kepler
        .kepler(&["start", "-d"])
        .failure()
        .stderr_has("kepler.yaml:4")
        .stderr_has("sometimes");
    assert_eq!(configs_in(&kepler), 0);
    // The daemon is unharmed.
    kepler.kepler(&["daemon", "status"]).success();
}

#[test]
fn daemon_status_lists_loaded_configs_and_finds_them_again_after_a_restart() {
    let mut kepler = Kepler::started();
    let source = kepler.write("kepler.yaml", GREETER);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.kepler(&["stop"]).success();
    let canonical = fs::canonicalize(&source).unwrap();
    kepler
        .kepler(&["daemon", "status"])
        .success()
        .stdout_has(&canonical.to_string_lossy());
    kepler.signal_daemon(nix::sys::signal::Signal::SIGTERM);
    kepler.wait_daemon_exit();
    kepler.start_daemon();
    kepler
        .kepler(&["daemon", "status"])
        .success()
        .stdout_has(&canonical.to_string_lossy())
        .stdout_has("1 services, 0 running");
}

#[test]
fn hostile_configs_fail_with_an_error_and_the_daemon_keeps_serving() {
    let kepler = Kepler::started();
    let mut bomb = String::from("x-l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=8 {
        let items = vec![format!("*l{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("x-l{level}: &l{level} [{items}]\n"));
    }
    bomb.push_str("services:\n  web:\n    command: [sleep, '1']\n");
    kepler.write("bomb.yaml", &bomb);
    kepler
        .kepler(&["-f", "bomb.yaml", "start", "-d"])
        .failure()
        .stderr_has("aliases here expand to more than");
    kepler.write("deep.yaml", &format!("{}x\n", "- ".repeat(100_000)));
    kepler
        .kepler(&["-f", "deep.yaml", "start", "-d"])
        .failure()
        .stderr_has("nested deeper than");
    kepler.write(
        "fifo.yaml",
        "services:\n  web:\n    command: [sleep, '1']\n    env_file: /dev/zero\n",
    );
    kepler
        .kepler(&["-f", "fifo.yaml", "start", "-d"])
        .failure()
        .stderr_has("not a regular file");
    kepler.kepler(&["daemon", "status"]).success();
}
