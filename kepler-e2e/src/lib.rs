//! End-to-end test harness: the real `kepler-daemon` and `kepler` binaries on a
//! throw-away state directory.
//!
//! A [`Kepler`] owns one daemon and everything it started. Dropping it stops
//! the daemon and kills any process group the daemon left behind; if the test
//! is failing, the daemon's log is printed so the failure can be read.
//! Waiting is always for a condition with a deadline ([`wait_until`]), never a
//! fixed sleep.

pub mod cgroups;
pub mod hostile;
pub mod kill_on_drop;
pub mod terminal;
pub mod wire;

pub use kill_on_drop::KillOnDrop;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getgrouplist, Pid, User};
use tempfile::TempDir;

use cgroups::daemon_subtree;
pub use cgroups::{cgroup2_mount, cgroup_of, kill_and_remove_cgroups, Containment};

/// Default deadline for conditions in tests.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The directory holding the built `kepler` and `kepler-daemon` binaries:
/// `$KEPLER_BIN_DIR`, else the cargo target directory this test was built in.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KEPLER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps")
        .to_path_buf();
    for bin in ["kepler", "kepler-daemon"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: build the binaries first with `cargo build --workspace --bins` \
             (scripts/test does this), or set KEPLER_BIN_DIR",
            dir.join(bin).display()
        );
    }
    dir
}

/// Polls `condition` until it holds, panicking with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The result of running a CLI command, with assertions that print everything.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    command: String,
}

impl Run {
    pub(crate) fn from_output(command: String, output: Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            command,
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        assert!(self.ok(), "expected `{}` to succeed:\n{self}", self.command);
        self
    }

    #[track_caller]
    pub fn failure(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(1),
            "expected `{}` to exit 1:\n{self}",
            self.command
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, fragment: &str) -> &Self {
        assert!(
            self.stderr.contains(fragment),
            "expected stderr of `{}` to contain {fragment:?}:\n{self}",
            self.command
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, fragment: &str) -> &Self {
        assert!(
            self.stdout.contains(fragment),
            "expected stdout of `{}` to contain {fragment:?}:\n{self}",
            self.command
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// An unprivileged account the tests run commands as.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl TestUser {
    /// Member of the `kepler` group.
    pub fn member() -> Self {
        Self::lookup("kepler-test-a")
    }

    /// Not a member of the `kepler` group.
    pub fn outsider() -> Self {
        Self::lookup("kepler-test-b")
    }

    #[track_caller]
    pub fn lookup(name: &str) -> Self {
        let user = User::from_name(name)
            .expect("passwd lookup")
            .unwrap_or_else(|| panic!("test user {name} is missing: run `sudo scripts/test-env`"));
        let cname = std::ffi::CString::new(name).unwrap();
        let groups = getgrouplist(&cname, user.gid).expect("getgrouplist");
        TestUser {
            name: name.into(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
        }
    }

    /// Makes `command` run as this user, with exactly its groups.
    pub fn apply(&self, command: &mut Command) {
        let (uid, gid) = (self.uid, self.gid);
        let groups: Vec<libc::gid_t> = self.groups.clone();
        // SAFETY: only async-signal-safe syscalls run between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// One daemon on its own state directory, plus a scratch directory for configs.
pub struct Kepler {
    dir: TempDir,
    state: PathBuf,
    bins: PathBuf,
    /// The daemon when started in the foreground by the harness.
    daemon: Option<Child>,
    /// Extra environment for every daemon this harness starts.
    daemon_env: Vec<(String, String)>,
    /// cgroup subtrees of daemons seen, removed when the harness goes.
    subtrees: Vec<PathBuf>,
}

impl Default for Kepler {
    fn default() -> Self {
        Self::new()
    }
}

impl Kepler {
    /// A fresh scratch directory; no daemon yet.
    pub fn new() -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the e2e tests must run as root (the daemon refuses anything else): sudo scripts/test"
        );
        let dir = tempfile::Builder::new()
            .prefix("kepler-e2e-")
            .tempdir()
            .expect("temp dir");
        // Test users must be able to reach the socket inside.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        Kepler {
            dir,
            state,
            bins: bin_dir(),
            daemon: None,
            daemon_env: Vec::new(),
            subtrees: Vec::new(),
        }
    }

    /// A fresh scratch directory with a running daemon.
    pub fn started() -> Self {
        let mut kepler = Self::new();
        kepler.start_daemon();
        kepler
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Where the `kepler` and `kepler-daemon` binaries under test are.
    pub fn bin_dir(&self) -> &Path {
        &self.bins
    }

    pub fn socket_path(&self) -> PathBuf {
        self.state.join(kepler_protocol::SOCKET_FILE)
    }

    pub fn pid_path(&self) -> PathBuf {
        self.state.join(kepler_protocol::PID_FILE)
    }

    fn foreground_log(&self) -> PathBuf {
        self.dir.path().join("daemon-foreground.log")
    }

    /// Writes `contents` to `name` inside the scratch directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        path
    }

    /// A command for one of the binaries, pointed at this state directory.
    pub fn command(&self, binary: &str) -> Command {
        let mut command = Command::new(self.bins.join(binary));
        command
            .env(kepler_protocol::STATE_DIR_ENV, &self.state)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs `kepler <args>` as root and waits for it.
    pub fn kepler(&self, args: &[&str]) -> Run {
        self.run(self.command("kepler").args(args), args)
    }

    /// Runs `kepler <args>` as root with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = self.command("kepler");
        command.args(args).envs(env.iter().copied());
        self.run(&mut command, args)
    }

    /// Runs `kepler <args>` as `user`.
    pub fn kepler_as(&self, user: &TestUser, args: &[&str]) -> Run {
        let mut command = self.command("kepler");
        command.args(args);
        user.apply(&mut command);
        self.run(&mut command, args)
    }

    /// Runs `command` (a `kepler` command built with [`Kepler::command`] and
    /// changed as a test needs) and waits for it; `args` name it in failures.
    pub fn run(&self, command: &mut Command, args: &[&str]) -> Run {
        let output = command.output().expect("run kepler");
        Run::from_output(format!("kepler {}", args.join(" ")), output)
    }

    /// Starts the daemon in the foreground (as the harness's child) and waits
    /// until it answers a ping.
    pub fn start_daemon(&mut self) {
        self.start_daemon_with(|_| {});
    }

    /// [`Kepler::start_daemon`], with `customise` applied to the daemon's
    /// command first (e.g. to start it with other resource limits).
    pub fn start_daemon_with(&mut self, customise: impl FnOnce(&mut Command)) {
        assert!(
            self.daemon.is_none(),
            "daemon already started by this harness"
        );
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.foreground_log())
            .unwrap();
        let mut command = self.command("kepler-daemon");
        command
            .env("KEPLER_LOG", "debug")
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        customise(&mut command);
        let child = command.spawn().expect("spawn kepler-daemon");
        let pid = child.id() as i32;
        self.daemon = Some(child);
        self.wait_until_pingable();
        if let Some(subtree) = daemon_subtree(pid) {
            if !self.subtrees.contains(&subtree) {
                self.subtrees.push(subtree);
            }
        }
    }

    /// Waits until a ping on a fresh connection succeeds.
    pub fn wait_until_pingable(&mut self) {
        let start = Instant::now();
        loop {
            if wire::ping(&self.socket_path()).is_ok() {
                return;
            }
            if let Some(child) = self.daemon.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "kepler-daemon exited during start-up ({status}):\n{}",
                        self.daemon_log()
                    );
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "daemon did not answer a ping within {DEADLINE:?}:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pid recorded in the pid file, if any.
    pub fn daemon_pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Sends `signal` to the daemon.
    pub fn signal_daemon(&self, signal: Signal) {
        let pid = self.daemon_pid().expect("daemon pid file");
        kill(Pid::from_raw(pid), signal).expect("signal daemon");
    }

    /// Waits for the harness-started daemon to exit and returns its exit code.
    pub fn wait_daemon_exit(&mut self) -> Option<i32> {
        let mut child = self.daemon.take().expect("daemon started by this harness");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "daemon did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forgets the harness's child handle after the test killed the daemon.
    pub fn reap_killed_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.wait();
        }
    }

    /// Everything the daemon logged, foreground and detached.
    pub fn daemon_log(&self) -> String {
        let mut log = fs::read_to_string(self.foreground_log()).unwrap_or_default();
        if let Ok(detached) = fs::read_to_string(self.state.join("daemon.log")) {
            log.push_str(&detached);
        }
        log
    }
}

/// Field `number` of a `/proc/<pid>/stat` text, counted as proc(5) does
/// (3 is the state, 19 the niceness): fields after the command, which is
/// in parentheses and may hold spaces.
pub fn stat_field(stat: &str, number: usize) -> Option<&str> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(number.checked_sub(3)?)
}

/// The niceness of a process, or of a thread given `/proc/<pid>/task/<tid>`;
/// `None` once it is gone.
pub fn niceness_at(proc_dir: &Path) -> Option<i32> {
    let stat = fs::read_to_string(proc_dir.join("stat")).ok()?;
    stat_field(&stat, 19)?.parse().ok()
}

/// The niceness of process `pid` (panics if it is gone).
pub fn niceness(pid: i32) -> i32 {
    niceness_at(Path::new(&format!("/proc/{pid}")))
        .unwrap_or_else(|| panic!("no niceness for pid {pid}"))
}

/// True while `pid` runs; an exited process waiting to be reaped (a zombie)
/// does not count.
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 3).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes (zombies excluded) with `arg` among their arguments.
pub fn pids_with_arg(arg: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|part| part == arg.as_bytes()))
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

/// A service's row of `kepler ps --json`.
#[derive(Debug, Clone)]
pub struct ServiceRow(pub serde_json::Value);

impl ServiceRow {
    pub fn status(&self) -> &str {
        self.0["status"].as_str().unwrap_or("")
    }
    pub fn exit_code(&self) -> Option<i64> {
        self.0["exit_code"].as_i64()
    }
    pub fn pid(&self) -> Option<i32> {
        self.0["pid"].as_i64().map(|p| p as i32)
    }
    pub fn restarts(&self) -> u64 {
        self.0["restarts"].as_u64().unwrap_or(0)
    }
    pub fn reason(&self) -> &str {
        self.0["reason"].as_str().unwrap_or("")
    }
    pub fn cpu_percent(&self) -> Option<f64> {
        self.0["cpu_percent"].as_f64()
    }
    pub fn memory_bytes(&self) -> Option<u64> {
        self.0["memory_bytes"].as_u64()
    }
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.0["cpu_seconds"].as_f64()
    }
}

impl Kepler {
    /// `kepler -f <file> ps --json`, by name (`web`, or `web.2` for an
    /// instance of a service with `replicas:`).
    pub fn ps(&self, file: &str) -> std::collections::BTreeMap<String, ServiceRow> {
        let run = self.kepler(&["-f", file, "ps", "--json"]);
        run.success();
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("ps --json: {e}\n{run}"));
        rows.into_iter()
            .map(|row| (row["name"].as_str().unwrap().to_string(), ServiceRow(row)))
            .collect()
    }

    /// One service's row.
    pub fn service(&self, file: &str, name: &str) -> ServiceRow {
        self.ps(file)
            .remove(name)
            .unwrap_or_else(|| panic!("no service {name} in {file}"))
    }

    /// Waits until `name` in `file` satisfies `condition`, printing its last
    /// state on timeout.
    pub fn wait_for_service(
        &self,
        file: &str,
        name: &str,
        what: &str,
        condition: impl Fn(&ServiceRow) -> bool,
    ) -> ServiceRow {
        let start = Instant::now();
        loop {
            let row = self.service(file, name);
            if condition(&row) {
                return row;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {name} to be {what}; last: {:?}",
                row.0
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `path` (in the scratch dir) exists and returns its contents.
    pub fn wait_for_file(&self, name: &str) -> String {
        let path = self.dir().join(name);
        wait_until(&format!("{} to exist", path.display()), DEADLINE, || {
            fs::read_to_string(&path).is_ok_and(|s| !s.is_empty())
        });
        fs::read_to_string(path).unwrap()
    }

    /// Waits until the file's lines satisfy `condition`; returns them.
    pub fn wait_for_lines(
        &self,
        name: &str,
        what: &str,
        condition: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let path = self.dir().join(name);
        let read = || -> Vec<String> {
            fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect()
        };
        wait_until(what, DEADLINE, || condition(&read()));
        read()
    }
}

/// True while any process of group `pgid` exists (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    kill(Pid::from_raw(-pgid), None).is_ok()
}

/// Pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_field(&stat, 4)?.parse::<i32>().ok())
                == Some(parent)
        })
        .collect()
}

impl Drop for Kepler {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "==== kepler-daemon log ({}) ====\n{}==== end of daemon log ====",
                self.state.display(),
                self.daemon_log()
            );
        }
        let pid = self
            .daemon
            .as_ref()
            .map(|c| c.id() as i32)
            .or_else(|| self.daemon_pid());
        if let Some(pid) = pid {
            // Services lead their own process groups, or live in the daemon's
            // cgroup subtree; remember both before the daemon goes, in case
            // it cannot stop them itself.
            let groups = children_of(pid);
            let subtree = daemon_subtree(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let start = Instant::now();
            while process_alive(pid) && start.elapsed() < DEADLINE {
                if let Some(child) = self.daemon.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            for group in groups {
                let _ = kill(Pid::from_raw(-group), Signal::SIGKILL);
            }
            if let Some(mut child) = self.daemon.take() {
                let _ = child.wait();
            }
            if let Some(subtree) = subtree {
                if !self.subtrees.contains(&subtree) {
                    self.subtrees.push(subtree);
                }
            }
        }
        // A daemon that stopped cleanly removed its subtree already; one that
        // was killed left it, with whatever ran in it.
        for subtree in &self.subtrees {
            kill_and_remove_cgroups(subtree);
        }
    }
}

impl Kepler {
    /// A directory inside the scratch dir that every user may write, where
    /// services and hooks running as other users leave their evidence.
    pub fn shared_dir(&self, name: &str) -> PathBuf {
        let path = self.dir().join(name);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        path
    }

    /// Everything `kepler -f <file> logs <args...>` prints.
    pub fn logs(&self, file: &str, args: &[&str]) -> String {
        let mut all = vec!["-f", file, "logs"];
        all.extend_from_slice(args);
        let run = self.kepler(&all);
        run.success();
        run.stdout.clone()
    }

    /// Waits until `kepler -f <file> logs` contains `fragment`; returns the logs.
    pub fn wait_for_log(&self, file: &str, fragment: &str) -> String {
        let start = Instant::now();
        loop {
            let last = self.logs(file, &[]);
            if last.contains(fragment) {
                return last;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {fragment:?} in the logs of {file}:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The fields of one line of `/proc/<pid>/status` (e.g. `Uid` gives real,
/// effective, saved and filesystem uid).
pub fn proc_status(pid: i32, key: &str) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let prefix = format!("{key}:");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{status}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}
