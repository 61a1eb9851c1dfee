//! Where the kernel cannot unshare a descriptor table (before Linux 5.9),
//! the first child says so before touching anything, and every spawn from
//! then on copies the whole table: children still get their standard
//! descriptors only. Its own binary: the switch is process-wide.

mod process_support;

use std::os::fd::{FromRawFd, OwnedFd};

use kepler_daemon::process::{refuse_unsharing_descriptor_tables, spawn};
use process_support::{read_to_end, spec, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_get_a_copy_of_the_table_where_it_cannot_be_shared() {
    // SAFETY: a plain open of a constant path; the result is owned below.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    // SAFETY: just opened, owned by nobody else.
    let inheritable = unsafe { OwnedFd::from_raw_fd(fd) };
    refuse_unsharing_descriptor_tables();
    for _ in 0..3 {
        let mut spawned = spawn(&spec(&["ls", "/proc/self/fd"])).expect("spawn ls");
        let out = read_to_end(spawned.stdout.take().unwrap()).await;
        assert!(within("ls exits", spawned.exit).await.success());
        let mut fds: Vec<u32> = String::from_utf8(out)
            .unwrap()
            .split_whitespace()
            .map(|fd| fd.parse().unwrap())
            .collect();
        fds.sort_unstable();
        fds.pop(); // the one `ls` listed them through
        assert_eq!(fds, vec![0, 1, 2]);
    }
    drop(inheritable);
}
