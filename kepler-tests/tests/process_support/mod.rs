//! Shared helpers for the `process_*` and `user_*` tests: building specs,
//! waiting with deadlines, reading pipes and `/proc`.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kepler_daemon::process::{OutputMode, ProcessSpec, ResourceLimits};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;

/// Generous: these deadlines only fire when something is broken.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A spec running `argv` in `/` with a minimal PATH and piped output.
pub fn spec(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        working_dir: PathBuf::from("/"),
        user: None,
        limits: ResourceLimits::default(),
        umask: 0o022,
        stdout: OutputMode::Pipe,
        stderr: OutputMode::Pipe,
    }
}

/// `sh -c script` via [`spec`].
pub fn shell(script: &str) -> ProcessSpec {
    spec(&["sh", "-c", script])
}

/// Awaits `future`, failing the test with `what` if the deadline passes.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Reads a pipe to EOF.
pub async fn read_to_end(mut pipe: pipe::Receiver) -> Vec<u8> {
    let mut out = Vec::new();
    within("pipe EOF", pipe.read_to_end(&mut out))
        .await
        .expect("read pipe");
    out
}

/// Reads lines until one equals `wanted`; returns everything read.
pub async fn read_until_line(reader: &mut BufReader<pipe::Receiver>, wanted: &str) -> String {
    let mut seen = String::new();
    within(&format!("line `{wanted}`"), async {
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).await.expect("read pipe");
            assert!(n > 0, "EOF before `{wanted}`; output so far: {seen:?}");
            seen.push_str(&line);
            if line.trim_end() == wanted {
                return;
            }
        }
    })
    .await;
    seen
}

/// The descriptors a child running `ls /proc/self/fd` saw, without the one
/// `ls` opened to list them (the highest).
pub async fn descriptors_of_a_child() -> Vec<u32> {
    let mut spawned =
        kepler_daemon::process::spawn(&spec(&["ls", "/proc/self/fd"])).expect("spawn ls");
    let out = read_to_end(spawned.stdout.take().unwrap()).await;
    assert!(within("ls exits", spawned.exit).await.success());
    let mut fds: Vec<u32> = String::from_utf8(out)
        .unwrap()
        .split_whitespace()
        .map(|fd| fd.parse().unwrap())
        .collect();
    fds.sort_unstable();
    fds.pop();
    fds
}

pub fn group_exists(pgid: i32) -> bool {
    kill(Pid::from_raw(-pgid), None) != Err(Errno::ESRCH)
}

pub fn process_exists(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

/// The value of `Field:` in `/proc/<pid>/status`, whitespace-normalised.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(soft, hard)` of the `/proc/<pid>/limits` row starting with `name`.
pub fn proc_limit(pid: i32, name: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let row = limits
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .unwrap_or_else(|| panic!("no `{name}` row in /proc/{pid}/limits"));
    let mut fields = row.split_whitespace();
    (
        fields.next().expect("soft").to_owned(),
        fields.next().expect("hard").to_owned(),
    )
}

/// SIGKILLs a service's group when dropped, so a failing test does not
/// leave its long-running children behind. Harmless once the group is gone.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 > 1 && group_exists(self.0) {
            let _ = kill(Pid::from_raw(-self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
