//! Whose config is whose (issue #12, finding 4): a config belongs to the
//! owner of its file, never to whoever loads it first; a member's config
//! never runs with more than the member's rights, even when root starts it;
//! a root config that anyone else could edit is refused, naming the file and
//! who could write it; members never learn what root has loaded.

use std::os::unix::fs::PermissionsExt;

use kepler_e2e::{proc_status, Kepler, TestUser};

const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

fn uid_of(pid: i32) -> u32 {
    proc_status(pid, "Uid")[1].parse().unwrap()
}

#[test]
fn a_member_cannot_claim_roots_config_by_loading_it_first() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write("root.yaml", SLEEPER);
    for verb in ["ps", "logs", "stop"] {
        kepler
            .kepler_as(&member, &["-f", "root.yaml", verb])
            .failure()
            .stderr_has("not found or not yours");
    }
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    let pid = kepler.service("root.yaml", "app").pid().unwrap();
    assert_eq!(uid_of(pid), 0, "root's config runs as the member");
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
    kepler.kepler(&["-f", "root.yaml", "recreate"]).success();
}

#[test]
fn root_starting_a_members_config_runs_it_as_the_member_without_roots_environment() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.shared_dir("out");
    kepler.write_as(
        &member,
        "mine.yaml",
        "kepler:\n  sys_env: inherit\nservices:\n  app:\n    command: [\"sh\", \"-c\", \"env > out/env; exec sleep 1000\"]\n",
    );
    kepler
        .run_with_env(
            &["-f", "mine.yaml", "start", "-d", "--wait"],
            &[("ROOTS_SECRET", "hunter2")],
        )
        .success();
    let pid = kepler.service("mine.yaml", "app").pid().unwrap();
    assert_eq!(uid_of(pid), member.uid);
    let env = kepler.wait_for_file("out/env");
    assert!(
        !env.contains("hunter2"),
        "root's environment reached the member:\n{env}"
    );
    assert!(env.contains(&format!("USER={}", member.name)), "{env}");
    // It is the member's: the member manages it.
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}

#[test]
fn members_never_learn_whether_root_loaded_a_path() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write("loaded.yaml", SLEEPER);
    kepler.write("unloaded.yaml", SLEEPER);
    kepler
        .kepler(&["-f", "loaded.yaml", "start", "-d", "--wait"])
        .success();
    let loaded = kepler.kepler_as(&member, &["-f", "loaded.yaml", "ps"]);
    let unloaded = kepler.kepler_as(&member, &["-f", "unloaded.yaml", "ps"]);
    loaded.failure();
    unloaded.failure();
    assert_eq!(
        loaded.stderr.replace("loaded.yaml", "X"),
        unloaded.stderr.replace("unloaded.yaml", "X"),
    );
    assert!(!loaded.stderr.contains("uid 0"), "{loaded}");
}

/// Root's `start` of `file`, which must be refused naming `names` and `who`.
fn refused_naming(kepler: &Kepler, file: &str, names: &str, who: &str) {
    let run = kepler.kepler(&["-f", file, "start", "-d"]);
    run.failure()
        .stderr_has(names)
        .stderr_has(who)
        .stderr_has("StrictModes");
}

#[test]
fn a_root_config_someone_else_can_modify_is_refused_naming_the_file_and_who() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let member_name = format!("({})", member.name);

    // The config itself, writable by every user.
    let open = kepler.write("open.yaml", SLEEPER);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused_naming(&kepler, "open.yaml", "open.yaml", "every user");

    // A root-owned file in a directory the member owns: it could swap it.
    let dir = kepler.dir().join("members-project");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(member.uid), Some(member.gid)).unwrap();
    kepler.write("members-project/kepler.yaml", SLEEPER);
    refused_naming(
        &kepler,
        "members-project/kepler.yaml",
        "members-project",
        &member_name,
    );

    // An env file the member owns.
    kepler.write_as(&member, "member.env", "A=1\n");
    kepler.write(
        "envfile.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    env_file: member.env\n",
    );
    refused_naming(&kepler, "envfile.yaml", "member.env", &member_name);

    // A Lua file the kepler group may write.
    let lua = kepler.write("lib.lua", "return { cmd = 'sleep' }\n");
    std::os::unix::fs::chown(&lua, None, Some(kepler_e2e_group())).unwrap();
    std::fs::set_permissions(&lua, std::fs::Permissions::from_mode(0o664)).unwrap();
    kepler.write(
        "lua.yaml",
        "services:\n  app:\n    command: !lua_file lib.lua\n",
    );
    refused_naming(&kepler, "lua.yaml", "lib.lua", "group kepler");

    // Nothing was loaded or run.
    let all = kepler.kepler(&["ps", "--all", "--json"]);
    assert_eq!(all.success().stdout.trim(), "[]", "{all}");
}

fn kepler_e2e_group() -> u32 {
    nix::unistd::Group::from_name("kepler")
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}
