//! Whose config is whose: a config belongs to the owner of its file, runs
//! as that user unless it names another (never root), is baked with that
//! user's rights, and is visible and manageable only by that user and root.
//!
//! Configs live in the scratch dir (0755, files 0644) so the member can read
//! them; the member's own configs are files it owns (`write_as`); what runs
//! as the member writes into `out/`.

use std::collections::BTreeSet;

use kepler_e2e::{proc_status, Kepler, Run, TestUser};

const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

/// `kepler <args...> --json` as `user`, e.g. `["-f", "mine.yaml", "ps"]`.
fn ps_as(kepler: &Kepler, user: &TestUser, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let run = kepler.kepler_as(user, &all);
    run.success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("ps --json: {e}\n{run}"))
}

fn uid_of(pid: i32) -> u32 {
    proc_status(pid, "Uid")[1].parse().unwrap()
}

fn refused(run: &Run) {
    run.failure().stderr_has("not found or not yours");
}

#[test]
fn services_of_a_members_config_run_as_the_member_when_they_name_no_user() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(&member, "mine.yaml", SLEEPER);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("mine.yaml", "app").pid().unwrap();
    assert_eq!(proc_status(pid, "Uid"), vec![member.uid.to_string(); 4]);
    assert_eq!(proc_status(pid, "Gid"), vec![member.gid.to_string(); 4]);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn the_owner_and_root_can_both_manage_a_members_config() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(&member, "mine.yaml", SLEEPER);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    let rows = ps_as(&kepler, &member, &["-f", "mine.yaml", "ps"]);
    assert_eq!(rows[0]["status"], "running", "{rows:?}");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
    assert_eq!(kepler.service("mine.yaml", "app").status(), "stopped");

    // Root acts on it too, and it stays the member's: it still runs as them.
    kepler
        .kepler(&["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("mine.yaml", "app").pid().unwrap();
    assert_eq!(uid_of(pid), member.uid);
    let rows = ps_as(&kepler, &member, &["-f", "mine.yaml", "ps"]);
    assert_eq!(rows[0]["pid"], pid, "{rows:?}");
    kepler.kepler(&["-f", "mine.yaml", "stop"]).success();
    assert_eq!(kepler.service("mine.yaml", "app").status(), "stopped");
}

#[test]
fn a_member_is_refused_on_a_config_root_loaded() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write("root.yaml", SLEEPER);
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("root.yaml", "app").pid();

    refused(&kepler.kepler_as(&member, &["-f", "root.yaml", "ps"]));
    refused(&kepler.kepler_as(&member, &["-f", "root.yaml", "stop"]));
    refused(&kepler.kepler_as(&member, &["-f", "root.yaml", "restart", "-d"]));
    refused(&kepler.kepler_as(&member, &["-f", "root.yaml", "logs"]));

    let app = kepler.service("root.yaml", "app");
    assert_eq!(app.status(), "running", "{:?}", app.0);
    assert_eq!(app.pid(), pid);
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
}

#[test]
fn nothing_in_a_members_config_may_run_as_root() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(
        &member,
        "mine.yaml",
        &format!(
            r#"services:
  as_root:
    command: ["sleep", "1000"]
    user: root
  root_group:
    command: ["sleep", "1000"]
    user: "{}:0"
  root_hook:
    command: ["sleep", "1000"]
    hooks:
      pre_start:
        run: "true"
        user: root
"#,
            member.uid
        ),
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .failure();
    for name in ["as_root", "root_group", "root_hook"] {
        let row = kepler.wait_for_service("mine.yaml", name, "failed", |r| r.status() == "failed");
        assert!(row.reason().contains("refused"), "{name}: {:?}", row.0);
        assert!(row.reason().contains("run as root"), "{name}: {:?}", row.0);
        assert_eq!(row.pid(), None, "{name}: {:?}", row.0);
    }
    let as_root = kepler.service("mine.yaml", "as_root");
    assert!(
        as_root.reason().contains("may not run as root"),
        "{:?}",
        as_root.0
    );
}

#[test]
fn a_member_cannot_read_a_file_it_has_no_right_to_through_env_file() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    env_file: /etc/shadow\n",
    );
    let run = kepler.kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"]);
    run.failure().stderr_has("/etc/shadow");
    assert!(
        run.stderr.to_lowercase().contains("permission denied"),
        "{run}"
    );
    // Nothing of the file made it anywhere a member could read it.
    let rows = ps_as(&kepler, &member, &["ps", "--all"]);
    assert!(rows.is_empty(), "{rows:?}");
}

#[test]
fn ps_all_and_daemon_status_show_a_member_only_its_own_configs() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let mine = kepler.write_as(&member, "mine.yaml", SLEEPER);
    let roots = kepler.write("root.yaml", SLEEPER);
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();

    let configs = |user: Option<&TestUser>| -> BTreeSet<String> {
        let rows = match user {
            Some(user) => ps_as(&kepler, user, &["ps", "--all"]),
            None => {
                let run = kepler.kepler(&["ps", "--all", "--json"]);
                serde_json::from_str(&run.success().stdout).unwrap()
            }
        };
        rows.iter()
            .map(|r| r["config"].as_str().unwrap().to_string())
            .collect()
    };
    let mine_s = mine.display().to_string();
    let roots_s = roots.display().to_string();
    assert_eq!(configs(Some(&member)), BTreeSet::from([mine_s.clone()]));
    assert_eq!(
        configs(None),
        BTreeSet::from([mine_s.clone(), roots_s.clone()])
    );

    let status = kepler.kepler_as(&member, &["daemon", "status"]);
    status.success().stdout_has(&mine_s);
    assert!(!status.stdout.contains(&roots_s), "{status}");
    kepler
        .kepler(&["daemon", "status"])
        .success()
        .stdout_has(&mine_s)
        .stdout_has(&roots_s);

    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
    kepler.kepler(&["-f", "mine.yaml", "stop"]).success();
}

#[test]
fn global_hooks_of_a_members_config_run_as_the_member() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.shared_dir("out");
    kepler.write_as(
        &member,
        "mine.yaml",
        "kepler:\n  hooks:\n    pre_start:\n      run: id -u > out/global_pre_start\nservices:\n  app:\n    command: [\"sleep\", \"1000\"]\n    hooks:\n      pre_start:\n        run: id -u > out/pre_start\n",
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    let uid = member.uid.to_string();
    assert_eq!(kepler.wait_for_file("out/global_pre_start").trim(), uid);
    assert_eq!(kepler.wait_for_file("out/pre_start").trim(), uid);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn recreate_by_root_bakes_a_members_config_with_the_members_rights() {
    use std::os::unix::fs::PermissionsExt;
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.shared_dir("out");
    kepler.write_as(&member, "mine.yaml", SLEEPER);
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();

    // The member's config now names a file only root may read.
    let secret = kepler.write("secret.env", "SECRET=hunter2\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo \\\"[$SECRET]\\\" > out/env; exec sleep 1000\"]\n    env_file: secret.env\n",
    );
    let run = kepler.kepler_as(&member, &["-f", "mine.yaml", "recreate"]);
    run.failure().stderr_has("secret.env");
    // Root asking for the rebake must not lend its rights (or its
    // environment) to the member's config: only the owner may recreate.
    kepler
        .kepler(&["-f", "mine.yaml", "recreate"])
        .failure()
        .stderr_has("only its owner may recreate it");
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    kepler.wait_for_service("mine.yaml", "app", "running", |r| r.status() == "running");
    assert!(
        !std::fs::read_to_string(kepler.dir().join("out/env"))
            .unwrap_or_default()
            .contains("hunter2"),
        "the member's service got root's secret"
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn a_members_config_runs_only_as_the_member_with_groups_the_member_has() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.shared_dir("out");
    kepler.write_as(
        &member,
        "mine.yaml",
        r#"services:
  own_group:
    command: ["sleep", "1000"]
    group: kepler
  shadow_group:
    command: ["sh", "-c", "cat /etc/shadow > out/shadow; exec sleep 1000"]
    group: shadow
  other_user:
    command: ["sh", "-c", "id -u > out/other_user; exec sleep 1000"]
    user: kepler-test-b
  other_hook_user:
    command: ["sleep", "1000"]
    hooks:
      pre_start:
        run: id -u > out/other_hook_user
        user: kepler-test-b
"#,
    );
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .failure();
    // A group the member has is fine.
    let own = kepler.wait_for_service("mine.yaml", "own_group", "running", |r| {
        r.status() == "running"
    });
    assert_eq!(proc_status(own.pid().unwrap(), "Gid")[1], {
        nix::unistd::Group::from_name("kepler")
            .unwrap()
            .unwrap()
            .gid
            .to_string()
    });
    // Another group or user would lend the member rights it does not have.
    for name in ["shadow_group", "other_user", "other_hook_user"] {
        let row = kepler.wait_for_service("mine.yaml", name, "failed", |r| r.status() == "failed");
        assert!(row.reason().contains("refused"), "{name}: {:?}", row.0);
        assert_eq!(row.pid(), None, "{name}: {:?}", row.0);
    }
    for file in ["shadow", "other_user", "other_hook_user"] {
        assert!(!kepler.dir().join("out").join(file).exists(), "{file}");
    }
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn file_watching_never_reveals_names_in_directories_the_owner_cannot_list() {
    use std::os::unix::fs::PermissionsExt;
    let kepler = Kepler::started();
    let member = TestUser::member();
    let tree = kepler.shared_dir("tree");
    let private = tree.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    kepler.write_as(
        &member,
        "watcher.yaml",
        "services:\n  app:\n    command: [sleep, '1000']\n    working_dir: tree\n    restart:\n      policy: always\n      watch: [\"**/*.txt\"]\n",
    );
    kepler
        .kepler_as(&member, &["-f", "watcher.yaml", "start", "-d", "--wait"])
        .success();
    std::fs::write(private.join("root-only-secret-name.txt"), "x").unwrap();
    // A visible change afterwards proves the watcher saw the burst.
    std::fs::write(tree.join("visible.txt"), "x").unwrap();
    kepler.wait_for_log("watcher.yaml", "visible.txt");
    let logs = kepler.kepler(&["-f", "watcher.yaml", "logs"]);
    assert!(!logs.stdout.contains("root-only-secret-name"), "{logs}");
    kepler
        .kepler_as(&member, &["-f", "watcher.yaml", "stop"])
        .success();
}

#[test]
fn only_root_may_stop_the_daemon() {
    let kepler = Kepler::started();
    kepler
        .kepler_as(&TestUser::member(), &["daemon", "stop"])
        .failure()
        .stderr_has("only root may");
    kepler.kepler(&["daemon", "status"]).success();
}
