//! What a child gets of the daemon's descriptor table: its three standard
//! descriptors and nothing else, however many the daemon holds (and
//! whether or not they are close-on-exec); and the daemon's own table is
//! left as it was. Children share the table until their first call, so
//! these are the checks that the sharing never shows.

mod process_support;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use kepler_daemon::process::descriptors::keep_high;
use kepler_daemon::process::spawn;
use process_support::{descriptors_of_a_child, spec, within};

/// What descriptor `fd` of this process points at, and its flags.
fn describe(fd: i32) -> (String, i32) {
    let target = fs::read_link(format!("/proc/self/fd/{fd}")).map_or_else(
        |e| format!("unreadable: {e}"),
        |target| target.display().to_string(),
    );
    // SAFETY: F_GETFD reads the descriptor's flags only.
    (target, unsafe { libc::fcntl(fd, libc::F_GETFD) })
}

/// `/dev/null` opened without close-on-exec, as a careless library would.
fn inheritable_null() -> OwnedFd {
    // SAFETY: a plain open of a constant path; the result is owned below.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open /dev/null");
    // SAFETY: just opened, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_gets_its_standard_descriptors_only() {
    // Low and high, close-on-exec or not: none may reach the child.
    let low: Vec<OwnedFd> = (0..40).map(|_| inheritable_null()).collect();
    let high: Vec<OwnedFd> = (0..40).map(|_| keep_high(inheritable_null())).collect();
    let files: Vec<fs::File> = (0..40)
        .map(|_| fs::File::open("/dev/null").unwrap())
        .collect();
    assert_eq!(descriptors_of_a_child().await, vec![0, 1, 2]);
    if !kepler_daemon::process::children_share_descriptor_tables() {
        eprintln!(
            "SKIP (shared table): this kernel has no CLOSE_RANGE_UNSHARE (Linux 5.9), so \
             children got a copy of the whole table; only that way was checked"
        );
    }
    drop((low, high, files));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_leaves_the_parents_descriptors_as_they_were() {
    // The standard ones (a child moves its pipes onto 0, 1 and 2) and ours,
    // low and high. Other tests of this binary may open and close theirs
    // meanwhile, so only these are compared.
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let low: Vec<OwnedFd> = (0..20).map(|_| inheritable_null()).collect();
    let high: Vec<OwnedFd> = (0..20).map(|_| keep_high(inheritable_null())).collect();
    let watched: Vec<i32> = [0, 1, 2, reader.as_raw_fd(), writer.as_raw_fd()]
        .into_iter()
        .chain(low.iter().chain(&high).map(|fd| fd.as_raw_fd()))
        .collect();
    let before: Vec<_> = watched.iter().map(|&fd| describe(fd)).collect();
    let mut waits = Vec::new();
    for _ in 0..200 {
        let mut spawned = spawn(&spec(&["true"])).expect("spawn true");
        drop((spawned.stdout.take(), spawned.stderr.take()));
        waits.push(spawned.exit);
    }
    for exit in waits {
        assert!(within("true exits", exit).await.success());
    }
    let after: Vec<_> = watched.iter().map(|&fd| describe(fd)).collect();
    assert_eq!(after, before, "the spawns changed the parent's descriptors");
    // And the pipe still works end to end.
    writer.write_all(b"still here").unwrap();
    drop(writer);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "still here");
    drop((low, high));
}

#[test]
fn a_kept_descriptor_moves_above_the_low_numbers_and_stays_the_same_file() {
    let (reader, writer) = std::io::pipe().unwrap();
    let low = OwnedFd::from(writer).into_raw_fd();
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .0;
    let writer = {
        // SAFETY: `low` is the writer's descriptor, taken back just above.
        let fd = unsafe { OwnedFd::from_raw_fd(low) };
        keep_high(fd)
    };
    let fd = writer.as_raw_fd();
    assert!(fd as u64 >= 1024.min(limit / 2), "kept at {fd}");
    // SAFETY: F_GETFD reads the descriptor's flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "close-on-exec");
    let mut writer = std::io::PipeWriter::from(writer);
    writer.write_all(b"through the moved end").unwrap();
    drop(writer);
    let mut text = String::new();
    let mut reader = reader;
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the moved end");
}
