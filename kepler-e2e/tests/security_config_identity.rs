//! A member against config identity (issue #12, finding 3): a config has one
//! name, its file's canonical path; symlinks, `..` and hard links never make
//! a second one, and nothing a member does can hide, orphan or delete root's.
//!
//! The member sends requests straight over the wire (`raw_request`), with
//! the path as it chooses, as a member bypassing the CLI would.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kepler_e2e::{process_alive, Kepler, TestUser};

const RAW: &str = env!("CARGO_BIN_EXE_raw_request");
const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

fn loaded_configs(kepler: &Kepler) -> BTreeSet<String> {
    let run = kepler.kepler(&["ps", "--all", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.success().stdout).unwrap();
    rows.iter()
        .map(|r| r["config"].as_str().unwrap().to_string())
        .collect()
}

/// A directory the member owns, inside the scratch directory.
fn members_dir(kepler: &Kepler, member: &TestUser) -> PathBuf {
    let dir = kepler.dir().join("member");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(member.uid), Some(member.gid)).unwrap();
    dir
}

#[test]
fn a_members_symlink_to_roots_config_is_neither_a_second_config_nor_a_way_in() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let roots = kepler.write("root.yaml", SLEEPER);
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("root.yaml", "app").pid().unwrap();
    let link = members_dir(&kepler, &member).join("link.yaml");
    kepler
        .sh_as(
            Some(&member),
            &format!("ln -s {} {}", roots.display(), link.display()),
        )
        .success();

    for verb in ["ps", "start", "stop"] {
        let run = kepler.raw_request(RAW, Some(&member), verb, &link);
        run.success().stdout_has("not found or not yours");
    }
    let dotdot = kepler.dir().join("member/../root.yaml");
    kepler
        .raw_request(RAW, Some(&member), "ps", &dotdot)
        .success()
        .stdout_has("not found or not yours");
    // Root's own `..` path is the same config, not a second one.
    kepler
        .raw_request(RAW, None, "ps", &dotdot)
        .success()
        .stdout_has("Ps(");
    assert_eq!(
        loaded_configs(&kepler),
        BTreeSet::from([roots.display().to_string()])
    );

    // The member's prune cannot touch root's state.
    kepler
        .raw_request(RAW, Some(&member), "prune", &link)
        .success();
    assert_eq!(kepler.service("root.yaml", "app").pid(), Some(pid));

    // Across a daemon restart root's service stays managed: `daemon stop`
    // stops it.
    kepler.kepler(&["daemon", "stop"]).success();
    assert!(!process_alive(pid), "root's service outlived daemon stop");
}

#[test]
fn a_hard_link_is_not_a_second_name_for_a_loaded_config() {
    let kepler = Kepler::started();
    let roots = kepler.write("root.yaml", SLEEPER);
    std::fs::hard_link(&roots, kepler.dir().join("alias.yaml")).unwrap();
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler(&["-f", "alias.yaml", "ps"])
        .failure()
        .stderr_has("is the same file as");
    assert_eq!(loaded_configs(&kepler).len(), 1);
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
}

#[test]
fn prune_removes_only_the_state_it_checked() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write("root.yaml", SLEEPER);
    kepler.write_as(&member, "mine.yaml", SLEEPER);
    // Looking bakes nothing: root's config is loaded by a start.
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "start", "-d", "--wait"])
        .success();
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
    // The member prunes its own stopped config, never root's.
    let run = kepler.kepler_as(&member, &["prune", "--force"]);
    run.success().stdout_has("removed");
    assert!(!run.stdout.contains("root.yaml"), "{run}");
    let left = loaded_configs(&kepler);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left.iter().next().unwrap().ends_with("root.yaml"));
    assert_eq!(
        std::fs::read_dir(kepler.state_dir().join("configs"))
            .unwrap()
            .count(),
        1
    );
}
