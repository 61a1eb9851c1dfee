//! Running services, hooks and probes as other users, with resource limits,
//! checked where the kernel keeps the truth: `/proc/<pid>/status` and
//! `/proc/<pid>/limits`.
//!
//! Processes running as a test user write their evidence into `out/`, a
//! directory every user may write.

use std::collections::BTreeSet;
use std::fs;

use kepler_e2e::{proc_status, Kepler, TestUser};
use nix::unistd::{Group, User};

fn kepler_gid() -> u32 {
    Group::from_name("kepler")
        .unwrap()
        .expect("the kepler group")
        .gid
        .as_raw()
}

/// Every uid (real, effective, saved, fs) and gid of `pid`, and its groups.
struct Ids {
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: BTreeSet<u32>,
}

fn ids(pid: i32) -> Ids {
    let numbers = |key| -> Vec<u32> {
        proc_status(pid, key)
            .iter()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    Ids {
        uids: numbers("Uid"),
        gids: numbers("Gid"),
        groups: numbers("Groups").into_iter().collect(),
    }
}

/// Starts one `sleep` service with `extra` settings and returns its pid.
fn start_sleeper(kepler: &Kepler, extra: &str) -> i32 {
    kepler.write(
        "kepler.yaml",
        &format!("services:\n  app:\n    command: [\"sleep\", \"1000\"]\n{extra}"),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.service("kepler.yaml", "app").pid().expect("a pid")
}

#[test]
fn a_named_user_runs_with_its_uid_gid_and_supplementary_groups() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let pid = start_sleeper(&kepler, "    user: kepler-test-a\n");
    let ids = ids(pid);
    assert_eq!(ids.uids, [member.uid; 4]);
    assert_eq!(ids.gids, [member.gid; 4]);
    assert_eq!(ids.groups, member.groups.iter().copied().collect());
    assert!(ids.groups.contains(&kepler_gid()), "{:?}", ids.groups);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn the_uid_colon_gid_form_sets_the_primary_group_and_keeps_the_users_groups() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let other_gid = TestUser::outsider().gid;
    let pid = start_sleeper(
        &kepler,
        &format!("    user: \"{}:{other_gid}\"\n", member.uid),
    );
    let ids = ids(pid);
    assert_eq!(ids.uids, [member.uid; 4]);
    assert_eq!(ids.gids, [other_gid; 4]);
    assert!(ids.groups.contains(&other_gid), "{:?}", ids.groups);
    assert!(ids.groups.contains(&kepler_gid()), "{:?}", ids.groups);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn group_overrides_the_users_primary_group() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let pid = start_sleeper(&kepler, "    user: kepler-test-a\n    group: kepler\n");
    let ids = ids(pid);
    assert_eq!(ids.uids, [member.uid; 4]);
    assert_eq!(ids.gids, [kepler_gid(); 4]);
    assert!(ids.groups.contains(&kepler_gid()), "{:?}", ids.groups);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_numeric_uid_without_a_passwd_entry_uses_it_as_gid_and_has_no_groups() {
    let kepler = Kepler::started();
    let uid = 54321;
    assert!(User::from_uid(uid.into()).unwrap().is_none());
    let pid = start_sleeper(&kepler, &format!("    user: \"{uid}\"\n"));
    let ids = ids(pid);
    assert_eq!(ids.uids, [uid; 4]);
    assert_eq!(ids.gids, [uid; 4]);
    assert!(ids.groups.is_empty(), "{:?}", ids.groups);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn hooks_and_health_checks_run_as_the_service_user_unless_they_name_their_own() {
    let kepler = Kepler::started();
    let out = kepler.shared_dir("out");
    kepler.write(
        "kepler.yaml",
        r#"services:
  app:
    command: ["sh", "-c", "id -u > out/service; exec sleep 1000"]
    user: kepler-test-a
    healthcheck:
      test: ["CMD-SHELL", "id -u > out/health"]
      interval: 100ms
    hooks:
      pre_start:
        run: id -u > out/pre_start
      post_start:
        run: id -u > out/post_start
        user: kepler-test-b
"#,
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let member = TestUser::member().uid.to_string();
    let outsider = TestUser::outsider().uid.to_string();
    for (file, uid) in [
        ("out/service", &member),
        ("out/pre_start", &member),
        ("out/health", &member),
        ("out/post_start", &outsider),
    ] {
        assert_eq!(kepler.wait_for_file(file).trim(), uid.as_str(), "{file}");
    }
    assert!(out.is_dir());
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_service_gets_home_user_and_logname_of_its_user() {
    let kepler = Kepler::started();
    kepler.shared_dir("out");
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo $USER $HOME $LOGNAME > out/env; exec sleep 1000\"]\n    user: kepler-test-a\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let entry = User::from_name("kepler-test-a").unwrap().unwrap();
    assert_eq!(
        kepler.wait_for_file("out/env").trim(),
        format!("kepler-test-a {} kepler-test-a", entry.dir.display())
    );
    kepler.kepler(&["stop"]).success();
}

/// The soft and hard values of one row of `/proc/<pid>/limits`.
fn limit(pid: i32, row: &str) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} in:\n{limits}"));
    let mut fields = line[row.len()..].split_whitespace();
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

#[test]
fn limits_are_applied_to_the_service_process() {
    let kepler = Kepler::started();
    let pid = start_sleeper(
        &kepler,
        "    limits:\n      memory: 512M\n      cpu_time: 60\n      max_fds: 256\n",
    );
    let bytes = (512u64 << 20).to_string();
    assert_eq!(limit(pid, "Max address space"), (bytes.clone(), bytes));
    assert_eq!(limit(pid, "Max cpu time"), ("60".into(), "60".into()));
    assert_eq!(limit(pid, "Max open files"), ("256".into(), "256".into()));
    kepler.kepler(&["stop"]).success();
}

#[test]
fn unknown_users_and_groups_are_config_errors_at_their_line() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    user: kepler-no-such-user\n  db:\n    command: [\"sleep\", \"1000\"]\n    group: kepler-no-such-group\n    hooks:\n      pre_start:\n        run: \"true\"\n        user: kepler-nobody-either\n",
    );
    // Refused when the config is loaded, with every problem at its line;
    // nothing is started and no state is written.
    kepler
        .kepler(&["start", "-d", "--wait"])
        .failure()
        .stderr_has(
            "kepler.yaml:4:11: services.app.user: user `kepler-no-such-user` does not exist",
        )
        .stderr_has("kepler.yaml:7")
        .stderr_has("kepler-no-such-group")
        .stderr_has("kepler.yaml:11")
        .stderr_has("kepler-nobody-either");
    assert!(
        !kepler.state_dir().join("configs").exists()
            || std::fs::read_dir(kepler.state_dir().join("configs"))
                .unwrap()
                .count()
                == 0
    );
    kepler
        .kepler(&["check"])
        .failure()
        .stderr_has("kepler-no-such-user");
}

#[test]
fn hooks_get_home_user_and_logname_of_the_user_they_run_as() {
    let kepler = Kepler::started();
    kepler.shared_dir("out");
    kepler.write(
        "kepler.yaml",
        r#"services:
  app:
    command: ["sleep", "1000"]
    user: kepler-test-a
    hooks:
      pre_start:
        run: echo $USER $HOME $LOGNAME > out/pre_start
      post_start:
        run: echo $USER $HOME $LOGNAME > out/post_start
        user: kepler-test-b
"#,
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    for (file, user) in [
        ("out/pre_start", "kepler-test-a"),
        ("out/post_start", "kepler-test-b"),
    ] {
        let entry = User::from_name(user).unwrap().unwrap();
        assert_eq!(
            kepler.wait_for_file(file).trim(),
            format!("{user} {} {user}", entry.dir.display()),
            "{file}"
        );
    }
    kepler.kepler(&["stop"]).success();
}
