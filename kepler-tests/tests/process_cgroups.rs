//! Spawning into a cgroup and stopping by cgroup, on the real cgroup v2
//! hierarchy, without a daemon: the child joins before exec, a stop reaches
//! processes that left the process group, emptiness comes through inotify,
//! and the cgroup is removed once empty. Skipped (visibly) where this
//! process cannot create cgroups.

mod process_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kepler_daemon::containment::{detect, Cgroup};
use kepler_daemon::metrics;
use kepler_daemon::process::{
    become_subreaper, join_cgroups_through_procs, spawn_into, Scope, StopOutcome,
};
use nix::sys::signal::Signal;
use process_support::{process_exists, read_until_line, shell, within};
use tokio::io::BufReader;

/// A cgroup of this test's own below the one the test runs in, removed
/// when dropped; `None` (after a SKIP line) without a writable cgroup v2.
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn new(test: &str) -> Option<TestCgroup> {
        let skip = |why: String| {
            eprintln!("SKIP: {test}, because {why}");
            None
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(mount) = detect::find_cgroup2_mount(&mountinfo) else {
            return skip("no cgroup2 filesystem is mounted".into());
        };
        let Some(dir) = detect::v2_cgroup_path(&own).and_then(|p| detect::cgroup_dir(&mount, &p))
        else {
            return skip("this process is not in the cgroup v2 hierarchy".into());
        };
        let dir = dir.join(format!("kepler-test-{}-{test}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            return skip(format!("{} cannot be created: {e}", dir.display()));
        }
        Some(TestCgroup { dir })
    }

    /// A child cgroup, as the daemon makes one per service.
    fn service(&self, name: &str) -> Arc<Cgroup> {
        Arc::new(Cgroup::create(self.dir.join(name)).unwrap())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                let cgroup = Cgroup::at(entry.path());
                let _ = cgroup.kill_all();
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn v2_line(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap()
}

#[tokio::test]
async fn a_child_and_its_setsid_escapee_share_its_cgroup_and_a_stop_reaches_both() {
    let Some(test) = TestCgroup::new("stop") else {
        return;
    };
    become_subreaper().unwrap();
    let cgroup = test.service("app.service");
    // The escapee tells its pid; the leader waits for it. Its argument
    // tells it from whatever process gets its pid next.
    let marker = format!("77{}", std::process::id());
    let spawned = spawn_into(
        &shell(&format!(
            "setsid sh -c 'echo $$; exec sleep {marker}' & wait"
        )),
        Some(cgroup.clone()),
    )
    .unwrap();
    let Scope::Cgroup { leader, .. } = &spawned.scope else {
        panic!(
            "spawned into a cgroup but scoped by group: {:?}",
            spawned.scope
        )
    };
    assert_eq!(*leader, spawned.pid);
    let mut out = BufReader::new(spawned.stdout.unwrap());
    let mut escapee_line = String::new();
    within(
        "the escapee's pid",
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut escapee_line),
    )
    .await
    .unwrap();
    let escapee: i32 = escapee_line.trim().parse().unwrap();
    let own = v2_line(spawned.pid);
    assert!(own.ends_with("/app.service"), "{own}");
    assert_eq!(v2_line(escapee), own, "setsid does not leave the cgroup");
    assert!(cgroup.is_populated());

    let outcome = within(
        "the stop",
        spawned.scope.stop(Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Graceful);
    let still_there = std::fs::read(format!("/proc/{escapee}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == marker.as_bytes())
    });
    assert!(
        !still_there || !process_exists(escapee),
        "the setsid escapee survived"
    );
    removed_soon(&cgroup).await;
}

#[tokio::test]
async fn without_clone3_the_child_joins_through_cgroup_procs_before_exec() {
    let Some(test) = TestCgroup::new("procs") else {
        return;
    };
    become_subreaper().unwrap();
    // As on a kernel older than 5.7, or under a seccomp filter without
    // clone3: this test process only.
    join_cgroups_through_procs();
    let cgroup = test.service("app.service");
    let spawned = spawn_into(
        &shell("cat /proc/self/cgroup; exec sleep 1000"),
        Some(cgroup.clone()),
    )
    .unwrap();
    let own = v2_line(spawned.pid);
    assert!(own.ends_with("/app.service"), "{own}");
    // The service's first command already ran inside it.
    let mut out = BufReader::new(spawned.stdout.unwrap());
    read_until_line(&mut out, &format!("0::{own}")).await;
    let outcome = within(
        "the stop",
        spawned.scope.stop(Signal::SIGTERM, Duration::from_secs(5)),
    )
    .await;
    assert_eq!(outcome, StopOutcome::Graceful);
    removed_soon(&cgroup).await;
}

/// Empty cgroups go to the daemon's removal thread: gone soon after.
async fn removed_soon(cgroup: &Cgroup) {
    within("the empty cgroup's removal", async {
        while cgroup.dir().exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn leftovers_of_an_exited_leader_are_killed_whole() {
    let Some(test) = TestCgroup::new("leftovers") else {
        return;
    };
    become_subreaper().unwrap();
    let cgroup = test.service("app.service");
    let spawned = spawn_into(
        &shell("setsid sleep 1000 & (sleep 1000 &); echo started"),
        Some(cgroup.clone()),
    )
    .unwrap();
    let mut out = BufReader::new(spawned.stdout.unwrap());
    read_until_line(&mut out, "started").await;
    within("the leader's exit", spawned.exit).await;
    assert!(cgroup.is_populated(), "its children live on");
    let outcome = within("reaping leftovers", spawned.scope.reap_leftovers()).await;
    assert_eq!(outcome, StopOutcome::Killed);
    removed_soon(&cgroup).await;
    assert_eq!(
        within("an already empty scope", spawned.scope.reap_leftovers()).await,
        StopOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn a_cancelled_scope_is_killed_now_and_its_cgroup_removed_once_empty() {
    let Some(test) = TestCgroup::new("cancel") else {
        return;
    };
    become_subreaper().unwrap();
    let cgroup = test.service("hook.pre_start-1.hook");
    let spawned = spawn_into(
        &shell("setsid sleep 1000 & exec sleep 1000"),
        Some(cgroup.clone()),
    )
    .unwrap();
    within("two members", async {
        while cgroup.members().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    spawned.scope.kill_now();
    // Handed to the removal thread when `populated 0` arrives.
    removed_soon(&cgroup).await;
}

#[tokio::test]
async fn usage_of_a_cgroup_counts_cpu_time_and_memory() {
    let Some(test) = TestCgroup::new("usage") else {
        return;
    };
    become_subreaper().unwrap();
    let cgroup = test.service("busy.service");
    // Burns about 0.2 s of CPU, then waits to be stopped.
    let spawned = spawn_into(
        &shell("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done; exec sleep 1000"),
        Some(cgroup.clone()),
    )
    .unwrap();
    let mut out = BufReader::new(spawned.stdout.unwrap());
    read_until_line(&mut out, "done").await;
    let usage = metrics::sample_one(&spawned.scope).expect("a live cgroup");
    assert!(usage.cpu_usec > 10_000, "{usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    within(
        "the stop",
        spawned.scope.stop(Signal::SIGKILL, Duration::ZERO),
    )
    .await;
}
