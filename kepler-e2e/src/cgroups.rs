//! cgroups as the tests see them: where a process is, the daemon's subtree,
//! and choosing the daemon's containment mode.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Kepler, DEADLINE};

/// How a test wants the daemon to contain services. Without a choice the
/// daemon decides, and `KEPLER_CGROUP` from the test's environment reaches
/// it (`KEPLER_CGROUP=off cargo nextest run` runs the whole suite in
/// process-group mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// cgroup v2 where the machine has a writable hierarchy.
    Cgroups,
    /// Process groups only (`KEPLER_CGROUP=off`).
    ProcessGroups,
}

impl Kepler {
    /// A fresh scratch directory whose daemons contain services as asked
    /// (whatever `KEPLER_CGROUP` the test runs with).
    pub fn with_containment(containment: Containment) -> Self {
        let mut kepler = Self::new();
        let value = match containment {
            Containment::Cgroups => "auto",
            Containment::ProcessGroups => "off",
        };
        kepler
            .daemon_env
            .push(("KEPLER_CGROUP".to_owned(), value.to_owned()));
        kepler
    }

    /// The daemon's cgroup subtree (`.../kepler-<hash>`) while it runs in
    /// cgroup mode.
    pub fn cgroup_subtree(&self) -> Option<PathBuf> {
        daemon_subtree(self.daemon_pid()?)
    }

    /// The `containment:` line of `kepler daemon status`.
    pub fn containment_line(&self) -> String {
        let status = self.kepler(&["daemon", "status"]);
        status.success();
        status
            .stdout
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("containment:"))
            .unwrap_or_else(|| panic!("no containment line in daemon status:\n{status}"))
            .to_owned()
    }

    /// A running daemon containing services as asked, or `None` after a
    /// visible SKIP naming `test` when cgroups are asked for and the daemon
    /// found no writable cgroup v2.
    pub fn started_in(containment: Containment, test: &str) -> Option<Kepler> {
        let mut kepler = Kepler::with_containment(containment);
        kepler.start_daemon();
        let line = kepler.containment_line();
        match containment {
            Containment::Cgroups if !line.starts_with("containment: cgroup v2 at ") => {
                eprintln!("SKIP: {test} with cgroups, because the daemon reports `{line}`");
                None
            }
            Containment::ProcessGroups => {
                assert!(
                    line.starts_with(
                        "containment: process groups (no writable cgroup v2: KEPLER_CGROUP=off"
                    ),
                    "{line}"
                );
                Some(kepler)
            }
            Containment::Cgroups => Some(kepler),
        }
    }
}

/// The cgroup v2 mount: `/sys/fs/cgroup` (unified layout) or
/// `/sys/fs/cgroup/unified` (hybrid layout).
pub fn cgroup2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|dir| {
            dir.join("cgroup.procs").is_file() && dir.join("cgroup.subtree_control").is_file()
        })
}

/// The cgroup v2 directory `pid` is in, from `/proc/<pid>/cgroup`.
pub fn cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(cgroup2_mount()?.join(path.trim_start_matches('/')))
}

/// The daemon's subtree (`.../kepler-<hash>`) when it runs in cgroup mode:
/// the parent of its `daemon` leaf.
pub(crate) fn daemon_subtree(daemon: i32) -> Option<PathBuf> {
    let leaf = cgroup_of(daemon)?;
    let subtree = leaf.parent()?;
    let named = |path: &Path, test: &dyn Fn(&str) -> bool| {
        path.file_name().and_then(|n| n.to_str()).is_some_and(test)
    };
    (named(&leaf, &|n| n == "daemon") && named(subtree, &|n| n.starts_with("kepler-")))
        .then(|| subtree.to_path_buf())
}

/// SIGKILLs everything in `dir` and below (`cgroup.kill`), waits until it
/// is empty, and removes the cgroups, deepest first.
pub fn kill_and_remove_cgroups(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            kill_and_remove_cgroups(&entry.path());
        }
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let populated = || {
        fs::read_to_string(dir.join("cgroup.events"))
            .is_ok_and(|events| events.contains("populated 1"))
    };
    let start = Instant::now();
    while populated() && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = fs::remove_dir(dir);
}
