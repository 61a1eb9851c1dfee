//! Who may talk to the daemon: root and the `kepler` group, nobody else.

use std::os::unix::fs::PermissionsExt;

use kepler_e2e::{Kepler, TestUser};

#[test]
fn a_member_of_the_kepler_group_is_served() {
    let kepler = Kepler::started();
    kepler
        .kepler_as(&TestUser::member(), &["daemon", "status"])
        .success()
        .stdout_has("kepler daemon is running");
}

#[test]
fn a_user_outside_the_group_is_refused_by_the_socket_permissions() {
    let kepler = Kepler::started();
    kepler
        .kepler_as(&TestUser::outsider(), &["daemon", "status"])
        .failure()
        .stderr_has("permission denied")
        .stderr_has("usermod -aG kepler");
}

#[test]
fn a_user_outside_the_group_is_refused_by_peer_credentials_even_if_the_socket_is_open() {
    let kepler = Kepler::started();
    // Loosen the filesystem so the connection reaches the daemon's own check.
    std::fs::set_permissions(kepler.state_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(kepler.socket_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    kepler
        .kepler_as(&TestUser::outsider(), &["daemon", "status"])
        .failure()
        .stderr_has("is not in the `kepler` group")
        .stderr_has("usermod -aG kepler");
    // The refusal closes only that connection.
    kepler.kepler(&["daemon", "status"]).success();
}
