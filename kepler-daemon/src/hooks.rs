//! Running one lifecycle hook (`pre_start`, `post_exit`, a global
//! `pre_cleanup`, ...) to completion: spawn it, forward its output line by
//! line, enforce its timeout and leave none of its processes behind.
//!
//! The orchestrator decides *when* a hook runs and what its failure means;
//! this module only runs it. The baker already gives every hook its final
//! environment and absolute working dir ([`HookConfig`]), so the orchestrator
//! only resolves the user and calls [`HookRun::new`] and [`run_hook`].
//!
//! A hook is finished when its process group is gone (in cgroup mode: its
//! own cgroup is empty): once the leader (`sh -c` or the argv's program)
//! exits, whatever it left running is SIGKILLed, as for a service whose main
//! process exited. A hook that times out gets SIGTERM, [`HOOK_STOP_GRACE`]
//! to clean up, then SIGKILL. A hook whose future is dropped (cancelled) is
//! SIGKILLed at once.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::config::{HookAction, HookConfig, HumanDuration, DEFAULT_UMASK};
use crate::containment::ConfigCgroup;
use crate::process::{
    signal_name, spawn_into, ExitStatus, ExitWaiter, OutputMode, ProcessSpec, ResourceLimits,
    Scope, SpawnError, StopOutcome,
};
use crate::user::ResolvedUser;

/// How long a timed-out hook may take to exit after SIGTERM before its group
/// is SIGKILLed. Short: the hook already overran its own budget.
pub const HOOK_STOP_GRACE: Duration = Duration::from_secs(2);

/// Once the group is gone nobody can write to the pipes any more, unless a
/// process escaped the group (`setsid`) still holding them; stop waiting for
/// end-of-file after this long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Longer lines are forwarded in pieces of this size, so a hook printing
/// without newlines cannot grow the daemon's memory without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Which hook this is, for messages and log tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookId {
    /// The hook's config name, e.g. `pre_start`.
    pub name: String,
    /// The owning service; `None` for a global (`kepler.hooks`) hook.
    pub service: Option<String>,
}

impl fmt::Display for HookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(service) => write!(f, "hook {} of service {service}", self.name),
            None => write!(f, "global hook {}", self.name),
        }
    }
}

/// Everything needed to run one hook once.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// The hook's config name, e.g. `pre_start`.
    pub name: String,
    /// The owning service; `None` for a global hook.
    pub service: Option<String>,
    pub action: HookAction,
    /// The exact environment; nothing is inherited from the daemon.
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    /// Run as this identity; `None` keeps the daemon's.
    pub user: Option<ResolvedUser>,
    /// File-creation mask (a service hook's is its service's).
    pub umask: u32,
    /// `None` lets the hook run as long as it likes.
    pub timeout: Option<Duration>,
    /// In cgroup mode, the config's cgroup: each run gets a cgroup of its
    /// own below it. `None` contains the hook by its process group.
    pub cgroups: Option<ConfigCgroup>,
}

impl HookRun {
    /// A run of a baked hook. `user` is the resolved form of
    /// `hook.user` / `hook.group` (the baker already filled in the service's
    /// user when the hook has none of its own).
    pub fn new(
        name: &str,
        service: Option<&str>,
        hook: &HookConfig,
        user: Option<ResolvedUser>,
    ) -> HookRun {
        HookRun {
            name: name.to_owned(),
            service: service.map(str::to_owned),
            action: hook.action.clone(),
            env: hook.environment.clone(),
            working_dir: hook.working_dir.clone(),
            user,
            umask: hook.umask.unwrap_or(DEFAULT_UMASK).0,
            timeout: hook.timeout.map(|timeout| timeout.0),
            cgroups: None,
        }
    }

    pub fn id(&self) -> HookId {
        HookId {
            name: self.name.clone(),
            service: self.service.clone(),
        }
    }

    fn argv(&self) -> Vec<String> {
        match &self.action {
            HookAction::Run(script) => vec!["sh".to_owned(), "-c".to_owned(), script.clone()],
            HookAction::Command(argv) => argv.clone(),
        }
    }
}

/// One line a hook wrote, without its `\n` (the last line may have had none;
/// overlong lines arrive in [`MAX_LINE_BYTES`] pieces). Raw bytes: hooks
/// need not print UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutputLine {
    pub hook: String,
    pub service: Option<String>,
    /// Written to stderr rather than stdout.
    pub stderr: bool,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{hook} could not start: {source}")]
    Spawn {
        hook: HookId,
        #[source]
        source: SpawnError,
    },
    #[error("{hook} exited with code {code}")]
    Exited { hook: HookId, code: i32 },
    #[error("{hook} was killed by {}", signal_name(*.signal))]
    Killed { hook: HookId, signal: i32 },
    #[error("{hook} ended with an unknown status")]
    UnknownStatus { hook: HookId },
    #[error(
        "{hook} timed out after {} and was killed; raise its `timeout` or make it finish sooner",
        HumanDuration(*.after)
    )]
    TimedOut { hook: HookId, after: Duration },
}

impl HookError {
    pub fn hook(&self) -> &HookId {
        match self {
            HookError::Spawn { hook, .. }
            | HookError::Exited { hook, .. }
            | HookError::Killed { hook, .. }
            | HookError::UnknownStatus { hook }
            | HookError::TimedOut { hook, .. } => hook,
        }
    }
}

/// Runs `run` to completion, calling `output` for every line it writes (in
/// order within each stream; stdout and stderr are separate pipes, so lines
/// of the two are interleaved only approximately).
///
/// Returns when no process of the hook's group is left. Success means the
/// hook exited with code 0. Dropping the future SIGKILLs the hook's group.
pub async fn run_hook(
    run: &HookRun,
    mut output: impl FnMut(HookOutputLine),
) -> Result<(), HookError> {
    let hook = run.id();
    let spec = ProcessSpec {
        argv: run.argv(),
        env: run.env.clone(),
        working_dir: run.working_dir.clone(),
        user: run.user.clone(),
        limits: ResourceLimits::default(),
        umask: run.umask,
        stdout: OutputMode::Pipe,
        stderr: OutputMode::Pipe,
    };
    let spawn_error = |source| HookError::Spawn {
        hook: hook.clone(),
        source,
    };
    let cgroup = match &run.cgroups {
        Some(cgroups) => Some(cgroups.hook(run.service.as_deref(), &run.name).map_err(
            |source| {
                spawn_error(SpawnError::Cgroup {
                    program: spec.argv[0].clone(),
                    cgroup: cgroups.dir().to_path_buf(),
                    source,
                })
            },
        )?),
        None => None,
    };
    let spawned = spawn_into(&spec, cgroup).map_err(spawn_error)?;
    let mut guard = GroupGuard::new(spawned.scope);
    let mut exit = spawned.exit;
    let mut streams = OutputStreams {
        stdout: spawned.stdout.map(LineReader::new),
        stderr: spawned.stderr.map(LineReader::new),
    };
    tracing::debug!(%hook, pid = guard.scope.leader(), "hook started");

    let mut emit = |stderr: bool, bytes: Vec<u8>| {
        output(HookOutputLine {
            hook: run.name.clone(),
            service: run.service.clone(),
            stderr,
            bytes,
        })
    };
    let run_to_exit = async {
        let status = streams.forward_until(&mut exit, &mut emit).await;
        // The leader is gone; nothing of the hook may outlive it.
        (status, guard.scope.reap_leftovers().await)
    };
    let finished = match run.timeout {
        None => Ok(run_to_exit.await),
        Some(limit) => tokio::time::timeout(limit, run_to_exit)
            .await
            .map_err(|_| limit),
    };
    let result = match finished {
        Ok((status, outcome)) => {
            guard.group_gone(outcome);
            check_status(hook, status)
        }
        Err(limit) => {
            tracing::warn!(%hook, ?limit, "hook timed out; stopping its process group");
            let outcome = guard.scope.stop(Signal::SIGTERM, HOOK_STOP_GRACE).await;
            guard.group_gone(outcome);
            Err(HookError::TimedOut { hook, after: limit })
        }
    };
    // The group is gone, so are the writers: forward what they left in the
    // pipes (for a timed-out hook, its last words).
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, streams.drain(&mut emit)).await;
    result
}

fn check_status(hook: HookId, status: ExitStatus) -> Result<(), HookError> {
    match (status.code, status.signal) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(HookError::Exited { hook, code }),
        (None, Some(signal)) => Err(HookError::Killed { hook, signal }),
        (None, None) => Err(HookError::UnknownStatus { hook }),
    }
}

/// SIGKILLs the hook's process group (or cgroup) when dropped before it was
/// seen gone: a cancelled hook must not keep running.
struct GroupGuard {
    scope: Scope,
    armed: bool,
}

impl GroupGuard {
    fn new(scope: Scope) -> Self {
        GroupGuard { scope, armed: true }
    }

    /// After the group is gone its number may be reused: never signal it
    /// again. An unkillable group stays armed; killing it again is harmless.
    fn group_gone(&mut self, outcome: StopOutcome) {
        if outcome != StopOutcome::Unkillable {
            self.armed = false;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(
                pid = self.scope.leader(),
                "hook cancelled; killing its processes"
            );
            // The reaper collects the killed processes.
            self.scope.kill_now();
        }
    }
}

struct OutputStreams {
    stdout: Option<LineReader>,
    stderr: Option<LineReader>,
}

impl OutputStreams {
    /// Forwards output lines until the leader exits, and returns its status.
    async fn forward_until(
        &mut self,
        exit: &mut ExitWaiter,
        emit: &mut impl FnMut(bool, Vec<u8>),
    ) -> ExitStatus {
        loop {
            tokio::select! {
                status = &mut *exit => return status,
                line = next_line(&mut self.stdout) => Self::deliver(&mut self.stdout, line, false, emit),
                line = next_line(&mut self.stderr) => Self::deliver(&mut self.stderr, line, true, emit),
            }
        }
    }

    /// Forwards the remaining lines of both streams up to end-of-file.
    async fn drain(&mut self, emit: &mut impl FnMut(bool, Vec<u8>)) {
        while self.stdout.is_some() || self.stderr.is_some() {
            tokio::select! {
                line = next_line(&mut self.stdout) => Self::deliver(&mut self.stdout, line, false, emit),
                line = next_line(&mut self.stderr) => Self::deliver(&mut self.stderr, line, true, emit),
            }
        }
    }

    fn deliver(
        reader: &mut Option<LineReader>,
        line: io::Result<Option<Vec<u8>>>,
        stderr: bool,
        emit: &mut impl FnMut(bool, Vec<u8>),
    ) {
        match line {
            Ok(Some(bytes)) => emit(stderr, bytes),
            Ok(None) => *reader = None,
            Err(err) => {
                tracing::warn!(%err, stderr, "cannot read hook output; dropping the rest of it");
                *reader = None;
            }
        }
    }
}

/// The next line of a stream that is still open; pending forever once it has
/// closed, so `select!` simply stops choosing it.
async fn next_line(reader: &mut Option<LineReader>) -> io::Result<Option<Vec<u8>>> {
    match reader {
        Some(reader) => reader.next_line().await,
        None => std::future::pending().await,
    }
}

/// Splits a pipe into `\n`-terminated lines. Cancel-safe: bytes are only
/// moved into `pending` after a completed read, so a `select!` that picks
/// another branch loses nothing.
struct LineReader {
    pipe: pipe::Receiver,
    pending: Vec<u8>,
    eof: bool,
}

impl LineReader {
    fn new(pipe: pipe::Receiver) -> Self {
        LineReader {
            pipe,
            pending: Vec::new(),
            eof: false,
        }
    }

    /// The next line without its `\n`; `None` at end-of-file.
    async fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.pending.len() >= MAX_LINE_BYTES {
                return Ok(Some(self.pending.drain(..MAX_LINE_BYTES).collect()));
            }
            if self.eof {
                return Ok((!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending)));
            }
            let mut chunk = [0u8; 8192];
            let read = self.pipe.read(&mut chunk).await?;
            if read == 0 {
                self.eof = true;
            } else {
                self.pending.extend_from_slice(&chunk[..read]);
            }
        }
    }
}
