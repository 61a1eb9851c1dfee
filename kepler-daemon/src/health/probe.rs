//! Running one probe and judging it: a command (exit 0 is healthy), an HTTP
//! `GET` (2xx) or a TCP connect. Every probe ends within its timeout, and a
//! failure always comes with a reason a person can act on.
//!
//! Command probes are spawned through [`crate::process`] as the leaders of
//! their own process group, with the service's environment, working
//! directory and user. A probe's whole group is gone before its result is
//! reported: one that overruns its timeout is SIGKILLed with everything it
//! started, and one that exits leaves no background children behind either.
//! If the probe future is dropped mid-flight (the runner was stopped), a
//! guard SIGKILLs the group.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{timeout, timeout_at, Instant};

use super::http::probe_http;
use super::spec::{Endpoint, ProbeTarget};
use crate::config::HumanDuration;
use crate::containment::ConfigCgroup;
use crate::process::{self, ProcessSpec, Scope};

/// How much of each output stream a command probe keeps (its tail).
const OUTPUT_TAIL: usize = 2048;
/// How long a command probe's output may keep coming after its group is
/// gone; only a member that escaped the group can hold the pipe that long.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);
/// The longest output line quoted in a failure reason.
const REASON_LINE: usize = 200;
/// Room for an HTTP status line.
const STATUS_LINE_BUFFER: usize = 1024;

pub(crate) fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", HumanDuration(timeout))
}

/// Process groups of command probes, shared between a runner task and its
/// handle so a stop can wait for the probe in flight to be gone.
#[derive(Debug, Default)]
pub(crate) struct ProbeGroups {
    /// The group of the probe running now, or 0.
    pub in_flight: AtomicI32,
    /// The group of the latest command probe, or 0 (a test hook).
    pub last: AtomicI32,
}

/// Runs probes of one target, reusing its buffers from probe to probe.
pub(crate) struct Prober {
    target: ProbeTarget,
    timeout: Duration,
    groups: Arc<ProbeGroups>,
    /// The config's cgroup and the service's name, in cgroup mode.
    cgroups: Option<(ConfigCgroup, String)>,
    status_line: Box<[u8]>,
    stdout: OutputTail,
    stderr: OutputTail,
}

impl Prober {
    pub fn new(
        target: ProbeTarget,
        timeout: Duration,
        groups: Arc<ProbeGroups>,
        cgroups: Option<(ConfigCgroup, String)>,
    ) -> Self {
        let is_exec = matches!(target, ProbeTarget::Exec(_));
        let status_line = if matches!(target, ProbeTarget::Http(_)) {
            vec![0; STATUS_LINE_BUFFER].into_boxed_slice()
        } else {
            Box::default()
        };
        Self {
            target,
            timeout,
            groups,
            cgroups,
            status_line,
            stdout: OutputTail::new(is_exec),
            stderr: OutputTail::new(is_exec),
        }
    }

    /// One probe: `Ok` when healthy, else why not.
    pub async fn probe(&mut self) -> Result<(), String> {
        match &self.target {
            ProbeTarget::Exec(spec) => {
                probe_command(
                    spec,
                    self.cgroups.as_ref(),
                    self.timeout,
                    &self.groups,
                    &mut self.stdout,
                    &mut self.stderr,
                )
                .await
            }
            ProbeTarget::Http(target) => {
                probe_http(target, &mut self.status_line, self.timeout).await
            }
            ProbeTarget::Tcp(endpoint) => probe_tcp(endpoint, self.timeout).await,
        }
    }
}

async fn probe_tcp(endpoint: &Endpoint, limit: Duration) -> Result<(), String> {
    match timeout(limit, endpoint.connect()).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(err)) => Err(format!("cannot connect to {endpoint}: {err}")),
        Err(_) => Err(timed_out(limit)),
    }
}

async fn probe_command(
    spec: &ProcessSpec,
    cgroups: Option<&(ConfigCgroup, String)>,
    limit: Duration,
    groups: &ProbeGroups,
    stdout_tail: &mut OutputTail,
    stderr_tail: &mut OutputTail,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    // Spawn and guard in one step, with no await between them: a stop
    // cancels this future only at an await point, so it always finds the
    // group recorded. (Under vfork the child runs before `spawn` returns, so
    // an observer on another thread can see it before the record; the stop
    // path never does.)
    let did_not_start =
        |err: &dyn std::fmt::Display| format!("the health check did not start: {err}");
    let cgroup = cgroups
        .map(|(cgroups, service)| cgroups.probe(service))
        .transpose()
        .map_err(|err| did_not_start(&format_args!("cannot create its cgroup: {err}")))?;
    let spawned = process::spawn_into(spec, cgroup).map_err(|err| did_not_start(&err))?;
    let guard = GroupGuard::new(spawned.scope, groups);
    let mut exit = spawned.exit;
    let mut stdout = spawned.stdout;
    let mut stderr = spawned.stderr;
    stdout_tail.clear();
    stderr_tail.clear();

    let finished = timeout_at(
        deadline,
        collect_until_exit(
            &mut exit,
            (&mut stdout, stdout_tail),
            (&mut stderr, stderr_tail),
        ),
    )
    .await;
    let Ok(status) = finished else {
        guard.scope.stop(Signal::SIGKILL, Duration::ZERO).await;
        guard.disarm();
        return Err(timed_out(limit));
    };
    // A probe's background children must not outlive it.
    guard.scope.reap_leftovers().await;
    guard.disarm();
    let _ = timeout(
        OUTPUT_GRACE,
        drain_pipes((&mut stdout, stdout_tail), (&mut stderr, stderr_tail)),
    )
    .await;

    if status.success() {
        return Ok(());
    }
    // stderr is where a failing check usually says why.
    match stderr_tail.last_line().or_else(|| stdout_tail.last_line()) {
        Some(line) => Err(format!("{status}: {line}")),
        None => Err(status.to_string()),
    }
}

/// Reads both pipes into their tails until `exit` resolves.
async fn collect_until_exit<E>(
    exit: &mut E,
    (stdout, stdout_tail): (&mut Option<pipe::Receiver>, &mut OutputTail),
    (stderr, stderr_tail): (&mut Option<pipe::Receiver>, &mut OutputTail),
) -> E::Output
where
    E: std::future::Future + Unpin,
{
    let mut out_chunk = [0u8; 512];
    let mut err_chunk = [0u8; 512];
    loop {
        tokio::select! {
            status = &mut *exit => return status,
            read = read_some(stdout, &mut out_chunk), if stdout.is_some() => {
                stdout_tail.push(&out_chunk[..read]);
            }
            read = read_some(stderr, &mut err_chunk), if stderr.is_some() => {
                stderr_tail.push(&err_chunk[..read]);
            }
        }
    }
}

/// Reads both pipes into their tails until both are closed.
async fn drain_pipes(
    (stdout, stdout_tail): (&mut Option<pipe::Receiver>, &mut OutputTail),
    (stderr, stderr_tail): (&mut Option<pipe::Receiver>, &mut OutputTail),
) {
    let mut out_chunk = [0u8; 512];
    let mut err_chunk = [0u8; 512];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(stdout, &mut out_chunk), if stdout.is_some() => {
                stdout_tail.push(&out_chunk[..read]);
            }
            read = read_some(stderr, &mut err_chunk), if stderr.is_some() => {
                stderr_tail.push(&err_chunk[..read]);
            }
        }
    }
}

/// Reads one chunk; at EOF or error the pipe is closed (set to `None`) and
/// 0 is returned. Pends forever for a closed pipe.
async fn read_some(pipe: &mut Option<pipe::Receiver>, chunk: &mut [u8]) -> usize {
    let Some(reader) = pipe else {
        return std::future::pending().await;
    };
    match reader.read(chunk).await {
        Ok(read) if read > 0 => read,
        _ => {
            *pipe = None;
            0
        }
    }
}

/// SIGKILLs a probe's process group (or cgroup) unless disarmed: the probe
/// future can be dropped at any await point when its runner is stopped.
struct GroupGuard<'a> {
    scope: Scope,
    groups: &'a ProbeGroups,
    armed: bool,
}

impl<'a> GroupGuard<'a> {
    fn new(scope: Scope, groups: &'a ProbeGroups) -> Self {
        groups.in_flight.store(scope.leader(), Ordering::Release);
        groups.last.store(scope.leader(), Ordering::Release);
        Self {
            scope,
            groups,
            armed: true,
        }
    }

    /// The group is known to be gone.
    fn disarm(mut self) {
        self.groups.in_flight.store(0, Ordering::Release);
        self.armed = false;
    }
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        // `in_flight` stays set so the handle's stop can wait for the group.
        if self.armed {
            self.scope.kill_now();
        }
    }
}

/// The last bytes of one output stream of a command probe.
struct OutputTail {
    bytes: Vec<u8>,
}

impl OutputTail {
    fn new(needed: bool) -> Self {
        let capacity = if needed { 2 * OUTPUT_TAIL } else { 0 };
        Self {
            bytes: Vec::with_capacity(capacity),
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(OUTPUT_TAIL)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(OUTPUT_TAIL);
        self.bytes.drain(..overflow.min(self.bytes.len()));
        self.bytes.extend_from_slice(chunk);
    }

    /// The last non-blank line, trimmed and shortened for a reason.
    fn last_line(&self) -> Option<String> {
        let line = self
            .bytes
            .split(|&byte| byte == b'\n')
            .map(|line| line.trim_ascii())
            .rfind(|line| !line.is_empty())?;
        let text = String::from_utf8_lossy(line);
        Some(match text.char_indices().nth(REASON_LINE) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tail_keeps_the_last_line() {
        let mut tail = OutputTail::new(true);
        assert_eq!(tail.last_line(), None);
        tail.push(b"first\nsecond\n\n  ");
        assert_eq!(tail.last_line().as_deref(), Some("second"));
        tail.push(&vec![b'x'; 3 * OUTPUT_TAIL]);
        assert_eq!(tail.bytes.len(), OUTPUT_TAIL);
        let line = tail.last_line().unwrap();
        assert_eq!(line.chars().count(), REASON_LINE + 1);
        assert!(line.ends_with('…'));
        tail.push(b"\nlast words");
        assert_eq!(tail.last_line().as_deref(), Some("last words"));
    }
}
