//! Where the kernel cannot unshare a descriptor table (before Linux 5.9),
//! the first child says so before touching anything, and every spawn from
//! then on copies the whole table: children still get their standard
//! descriptors only. Its own binary: the switch is process-wide.

mod process_support;

use std::os::fd::{FromRawFd, OwnedFd};

use kepler_daemon::process::{
    children_share_descriptor_tables, refuse_unsharing_descriptor_tables,
};
use process_support::descriptors_of_a_child;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_get_a_copy_of_the_table_where_it_cannot_be_shared() {
    // SAFETY: a plain open of a constant path; the result is owned below.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    // SAFETY: just opened, owned by nobody else.
    let inheritable = unsafe { OwnedFd::from_raw_fd(fd) };
    assert!(children_share_descriptor_tables());
    refuse_unsharing_descriptor_tables();
    for _ in 0..3 {
        assert_eq!(descriptors_of_a_child().await, vec![0, 1, 2]);
        assert!(!children_share_descriptor_tables(), "the refusal was heard");
    }
    drop(inheritable);
}
