//! `user:` / `group:` resolution and the privilege drop of a spawned
//! service.
//!
//! Tests that need a real account expect `kepler-test-a`, a member of group
//! `kepler` (the project's test script creates both; locally:
//! `groupadd kepler; useradd -M -s /usr/sbin/nologin kepler-test-a;
//! usermod -aG kepler kepler-test-a`). Without it they say so and pass.

mod process_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use kepler_daemon::process::{spawn, stop_group, SpawnError};
use kepler_daemon::user::{identity_env, resolve_user, ResolvedUser, UserError};
use nix::sys::signal::Signal;
use nix::unistd::{Group, User};
use process_support::{proc_status, read_to_end, spec, within, KillOnDrop};

const TEST_USER: &str = "kepler-test-a";

/// The test account and the `kepler` group, if this machine has them.
fn test_account() -> Option<(User, Group)> {
    let user = User::from_name(TEST_USER).ok().flatten();
    let group = Group::from_name("kepler").ok().flatten();
    match (user, group) {
        (Some(user), Some(group)) => Some((user, group)),
        _ => {
            eprintln!("skipping: user `{TEST_USER}` or group `kepler` does not exist");
            None
        }
    }
}

/// Spawns `sleep` as `user` and returns its `/proc` Uid, Gid and Groups.
async fn identity_of_service_running_as(user: ResolvedUser) -> (String, String, BTreeSet<u32>) {
    let mut sleeper = spec(&["sleep", "1000"]);
    sleeper.user = Some(user);
    let spawned = spawn(&sleeper).expect("spawn");
    let _cleanup = KillOnDrop(spawned.pid);
    let pid = spawned.pid;
    let identity = (
        proc_status(pid, "Uid"),
        proc_status(pid, "Gid"),
        proc_status(pid, "Groups")
            .split_whitespace()
            .map(|gid| gid.parse().unwrap())
            .collect(),
    );
    within(
        "stop",
        stop_group(pid, Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    identity
}

#[test]
fn name_resolves_to_passwd_ids_home_and_group_memberships() {
    let Some((user, kepler)) = test_account() else {
        return;
    };
    let resolved = resolve_user(TEST_USER, None).expect("resolve");
    assert_eq!(resolved.uid, user.uid.as_raw());
    assert_eq!(resolved.gid, user.gid.as_raw());
    assert!(resolved.supplementary.contains(&kepler.gid.as_raw()));
    assert!(resolved.supplementary.contains(&user.gid.as_raw()));
    assert_eq!(resolved.name.as_deref(), Some(TEST_USER));
    assert_eq!(resolved.home, Some(user.dir.clone()));

    let env = identity_env(&resolved);
    assert!(env.contains(&("USER".into(), TEST_USER.into())));
    assert!(env.contains(&("LOGNAME".into(), TEST_USER.into())));
    assert!(env.contains(&("HOME".into(), user.dir.to_string_lossy().into_owned())));
}

#[test]
fn numeric_forms_and_group_override() {
    let Some((user, kepler)) = test_account() else {
        return;
    };
    let uid = user.uid.as_raw();
    let kepler_gid = kepler.gid.as_raw();

    // A uid with a passwd entry is that user.
    let by_uid = resolve_user(&uid.to_string(), None).expect("uid");
    assert_eq!(by_uid, resolve_user(TEST_USER, None).unwrap());

    // uid:gid picks the primary group; memberships are kept.
    let explicit = resolve_user(&format!("{uid}:{kepler_gid}"), None).expect("uid:gid");
    assert_eq!((explicit.uid, explicit.gid), (uid, kepler_gid));
    assert!(explicit.supplementary.contains(&kepler_gid));

    // `group:` (name or number) overrides both passwd and `uid:gid`.
    let overridden = resolve_user(TEST_USER, Some("kepler")).expect("group name");
    assert_eq!(overridden.gid, kepler_gid);
    let overridden = resolve_user(&format!("{uid}:{}", user.gid), Some("kepler")).unwrap();
    assert_eq!(overridden.gid, kepler_gid);
    assert_eq!(resolve_user(TEST_USER, Some("4242")).unwrap().gid, 4242);
}

#[test]
fn uid_without_passwd_entry_runs_with_the_same_gid_and_no_groups() {
    let resolved = resolve_user("54321", None).expect("bare uid");
    assert_eq!(
        resolved,
        ResolvedUser {
            uid: 54321,
            gid: 54321,
            supplementary: vec![],
            name: None,
            home: None,
        }
    );
    assert!(identity_env(&resolved).is_empty());
    assert_eq!(resolve_user("54321:777", None).unwrap().gid, 777);
}

#[test]
fn unknown_user_or_group_is_an_error_saying_what_to_do() {
    let err = resolve_user("no-such-user-kepler", None).expect_err("unknown user");
    assert!(matches!(err, UserError::UnknownUser(_)));
    let message = err.to_string();
    assert!(
        message.contains("user `no-such-user-kepler` does not exist")
            && message.contains("useradd"),
        "{message}"
    );

    let err = resolve_user("root", Some("no-such-group-kepler")).expect_err("unknown group");
    assert!(matches!(err, UserError::UnknownGroup(_)));
    let message = err.to_string();
    assert!(
        message.contains("group `no-such-group-kepler` does not exist")
            && message.contains("groupadd"),
        "{message}"
    );

    let err = resolve_user("0:no-such-group-kepler", None).expect_err("unknown gid part");
    assert!(matches!(err, UserError::UnknownGroup(_)));

    for invalid in ["", ":", "1000:", ":1000"] {
        assert!(
            matches!(resolve_user(invalid, None), Err(UserError::InvalidUser(_))),
            "`{invalid}` must be rejected"
        );
    }
}

#[tokio::test]
async fn service_runs_with_the_users_uid_gid_and_supplementary_groups() {
    let Some((user, kepler)) = test_account() else {
        return;
    };
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let resolved = resolve_user(TEST_USER, None).expect("resolve");
    let (uids, gids, groups) = identity_of_service_running_as(resolved.clone()).await;
    assert_eq!(uids, format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(gids, format!("{gid} {gid} {gid} {gid}"));
    assert_eq!(groups, resolved.supplementary.iter().copied().collect());
    assert!(groups.contains(&kepler.gid.as_raw()));
    assert!(!groups.contains(&0), "root's groups must be dropped");
}

#[tokio::test]
async fn service_runs_with_an_overridden_group_and_as_a_bare_uid() {
    let Some((user, kepler)) = test_account() else {
        return;
    };
    let uid = user.uid.as_raw();
    let kepler_gid = kepler.gid.as_raw();
    let (uids, gids, _) =
        identity_of_service_running_as(resolve_user(TEST_USER, Some("kepler")).unwrap()).await;
    assert_eq!(uids, format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(
        gids,
        format!("{kepler_gid} {kepler_gid} {kepler_gid} {kepler_gid}")
    );

    let (uids, gids, groups) =
        identity_of_service_running_as(resolve_user("54321:54322", None).unwrap()).await;
    assert_eq!(uids, "54321 54321 54321 54321");
    assert_eq!(gids, "54322 54322 54322 54322");
    assert!(groups.is_empty(), "no supplementary groups: {groups:?}");
}

#[tokio::test]
async fn working_dir_is_entered_as_the_service_user() {
    let Some(_) = test_account() else {
        return;
    };
    // /root is 0700: root could enter it, the service user cannot.
    let mut private = spec(&["true"]);
    private.user = Some(resolve_user(TEST_USER, None).unwrap());
    private.working_dir = PathBuf::from("/root");
    let err = spawn(&private).expect_err("must fail");
    assert!(matches!(err, SpawnError::WorkingDir { .. }), "{err:?}");
    assert!(err.to_string().contains("Permission denied"), "{err}");

    // The user's environment helper feeds a shell that reports who it is.
    let mut whoami = spec(&["sh", "-c", "echo $USER $(id -u)"]);
    let resolved = resolve_user(TEST_USER, None).unwrap();
    whoami.env.extend(identity_env(&resolved));
    whoami.user = Some(resolved.clone());
    let mut spawned = spawn(&whoami).expect("spawn");
    let out = read_to_end(spawned.stdout.take().unwrap()).await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{TEST_USER} {}\n", resolved.uid)
    );
    assert!(within("exit", spawned.exit).await.success());
}
