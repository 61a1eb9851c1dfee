//! A rough figure for what one spawn + reap costs (printed, not asserted):
//! the daemon supervises thousands of services.
//! Run with `-- --nocapture` to see it.

mod process_support;

use std::time::Instant;

use futures::future::join_all;
use kepler_daemon::process::{spawn, OutputMode};
use process_support::{spec, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawning_and_reaping_a_thousand_processes() {
    const COUNT: u32 = 1000;
    let mut quiet = spec(&["true"]);
    quiet.stdout = OutputMode::Null;
    quiet.stderr = OutputMode::Null;

    // One after another: spawn, then wait for the reaper to report it.
    let started = Instant::now();
    for _ in 0..COUNT {
        let spawned = spawn(&quiet).expect("spawn");
        assert!(within("exit", spawned.exit).await.success());
    }
    let sequential = started.elapsed() / COUNT;

    // All spawned first, then all awaited: spawn cost with reaping overlapped.
    let started = Instant::now();
    let mut exits = Vec::new();
    for _ in 0..COUNT {
        exits.push(spawn(&quiet).expect("spawn").exit);
    }
    let spawned_in = started.elapsed() / COUNT;
    let statuses = within("all exits", join_all(exits)).await;
    let overall = started.elapsed() / COUNT;
    assert!(statuses.iter().all(|status| status.success()));

    eprintln!(
        "per process: spawn+reap one at a time {sequential:?}; \
         batch spawn {spawned_in:?}, batch spawn+reap {overall:?}"
    );
}
