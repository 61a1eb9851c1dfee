//! Nothing is left as a zombie: short-lived services and the orphans they
//! leave behind are all reaped by the daemon (a child subreaper).
//!
//! The only test in this binary, so no other test's processes show up in
//! the `/proc` scan.

mod process_support;

use futures::future::join_all;
use kepler_daemon::process::{become_subreaper, spawn, wait_group_gone, OutputMode};
use process_support::{shell, within};

/// Pids of zombie processes whose parent is this test process.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // Fields after `(comm)`: state, ppid, ...
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|ppid| ppid.parse::<i32>().ok());
            state == Some("Z") && ppid == Some(me)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_short_lived_services_and_their_orphans_leaves_no_zombies() {
    become_subreaper().expect("subreaper");
    let mut groups = Vec::new();
    let mut exits = Vec::new();
    for i in 0..50 {
        // Every other service leaves an orphan that outlives its leader and
        // is reparented to us.
        let script = if i % 2 == 0 {
            "exit 0"
        } else {
            "sleep 0.2 & exit 0"
        };
        let mut spec = shell(script);
        spec.stdout = OutputMode::Null;
        spec.stderr = OutputMode::Null;
        let spawned = spawn(&spec).expect("spawn");
        groups.push(spawned.pid);
        exits.push(spawned.exit);
    }
    let statuses = within("all leaders to exit", join_all(exits)).await;
    assert!(statuses.iter().all(|status| status.success()));
    within(
        "all groups to be gone",
        join_all(groups.iter().map(|&pgid| wait_group_gone(pgid))),
    )
    .await;

    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies left behind");
}
