//! Tests of the trusted state-tree access: each attack a planted file could
//! make, refused or defused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn root_of(dir: &Path) -> TrustedDir {
    let fd = openat(rustix::fs::CWD, dir, DIR_FLAGS, Mode::empty()).unwrap();
    TrustedDir::from_checked(fd, dir.to_path_buf())
}

fn as_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP: ownership checks need root because files must be owned by uid 0");
    false
}

#[test]
fn atomic_writes_replace_contents_and_leave_no_temp_files() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = root_of(tmp.path());
    dir.write_atomic("state.json", b"one").unwrap();
    dir.write_atomic("state.json", b"two").unwrap();
    assert_eq!(dir.read("state.json", 10).unwrap().unwrap(), b"two");
    assert_eq!(dir.entries().unwrap(), vec![OsString::from("state.json")]);
    let meta = std::fs::metadata(tmp.path().join("state.json")).unwrap();
    assert_eq!(meta.mode() & 0o7777, FILE_MODE);
}

#[test]
fn a_planted_symlink_is_replaced_never_written_through_nor_read() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    std::os::unix::fs::symlink(&victim, tmp.path().join("state.json")).unwrap();
    let dir = root_of(tmp.path());
    let err = dir.read("state.json", 100).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(dir.open_append("state.json").is_err());
    dir.write_atomic("state.json", b"new").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(
        &tmp.path().join("daemon.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let dir = root_of(tmp.path());
    let err = dir.open_append("daemon.log").unwrap_err();
    assert!(err.to_string().contains("a FIFO"), "{err}");
    let err = dir.read("daemon.log", 10).unwrap_err();
    assert!(err.to_string().contains("a FIFO"), "{err}");
}

#[test]
fn files_of_other_users_or_writable_by_others_are_refused() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = root_of(tmp.path());
    std::fs::write(tmp.path().join("mine"), b"x").unwrap();
    std::os::unix::fs::chown(tmp.path().join("mine"), Some(65534), None).unwrap();
    let err = dir.read("mine", 10).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");

    std::fs::write(tmp.path().join("open"), b"x").unwrap();
    std::fs::set_permissions(
        tmp.path().join("open"),
        std::fs::Permissions::from_mode(0o646),
    )
    .unwrap();
    let err = dir.read("open", 10).unwrap_err();
    assert!(err.to_string().contains("every user may write"), "{err}");

    std::fs::write(tmp.path().join("group"), b"x").unwrap();
    std::os::unix::fs::chown(tmp.path().join("group"), None, Some(65534)).unwrap();
    std::fs::set_permissions(
        tmp.path().join("group"),
        std::fs::Permissions::from_mode(0o660),
    )
    .unwrap();
    let err = dir.read("group", 10).unwrap_err();
    assert!(err.to_string().contains("group 65534"), "{err}");
}

#[test]
fn the_old_group_root_layout_is_tightened() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("configs");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o770)).unwrap();
    std::fs::write(sub.join("state.json"), b"{}").unwrap();
    std::fs::set_permissions(
        sub.join("state.json"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let dir = root_of(tmp.path());
    let configs = dir.open_dir("configs").unwrap().unwrap();
    assert_eq!(configs.read("state.json", 10).unwrap().unwrap(), b"{}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&sub), DIR_MODE);
    assert_eq!(mode(&sub.join("state.json")), FILE_MODE);
}

#[test]
fn hard_links_are_never_written_in_place() {
    if !as_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("elsewhere"), b"x").unwrap();
    std::fs::hard_link(tmp.path().join("elsewhere"), tmp.path().join("daemon.log")).unwrap();
    let dir = root_of(tmp.path());
    let err = dir.open_append("daemon.log").unwrap_err();
    assert!(err.to_string().contains("hard links"), "{err}");
}

#[test]
fn names_are_single_components() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = root_of(tmp.path());
    for name in ["", ".", "..", "a/b", "../x", "a\0b"] {
        assert!(dir.read(name, 10).is_err(), "{name:?}");
        assert!(dir.write_atomic(name, b"x").is_err(), "{name:?}");
        assert!(dir.remove_tree(name).is_err(), "{name:?}");
    }
}

#[test]
fn remove_tree_removes_links_not_their_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"x").unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("logs")).unwrap();
    std::fs::write(tree.join("logs/a.log"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.join("logs/out")).unwrap();
    let dir = root_of(tmp.path());
    dir.remove_tree("tree").unwrap();
    assert!(!tree.exists());
    assert!(outside.path().join("keep").exists());
}
