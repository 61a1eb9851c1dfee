//! Starting a service's process: its own session and process group, the
//! exact environment it was configured with, its user, limits and output
//! pipes.
//!
//! Program lookup: a name containing `/` is used as is (relative names are
//! resolved inside `working_dir`). A bare name is searched in the service's
//! own `PATH` when its environment has one (std hands that lookup to
//! `execvp` in the child, after the user switch). When the environment has
//! no `PATH`, the name is searched here, in the daemon, in
//! [`DEFAULT_SEARCH_PATH`]; no `PATH` is added to the service's environment.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::net::unix::pipe;

use super::child::{decode_error, ChildFailure, ChildSetup, Stage};
use super::limits::ResourceLimits;
use super::reaper::{reaper, ExitWaiter};
use super::stop::signal_group;
use crate::user::ResolvedUser;

/// Where a bare program name is looked up when the service environment has
/// no `PATH`; the usual default of shells and login(1).
pub const DEFAULT_SEARCH_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one service process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program and arguments; `argv[0]` is the program.
    pub argv: Vec<String>,
    /// The exact environment; nothing is inherited from the daemon.
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    /// Run as this identity; `None` keeps the daemon's (root).
    pub user: Option<ResolvedUser>,
    pub limits: ResourceLimits,
    pub stdout: OutputMode,
    pub stderr: OutputMode,
}

/// Where a service's stdout or stderr goes. stdin is always `/dev/null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A pipe the daemon reads (non-blocking, registered with tokio).
    Pipe,
    /// `/dev/null`.
    Null,
}

impl OutputMode {
    fn stdio(self) -> Stdio {
        match self {
            OutputMode::Pipe => Stdio::piped(),
            OutputMode::Null => Stdio::null(),
        }
    }
}

/// A started service process.
#[derive(Debug)]
pub struct Spawned {
    /// The leader's pid, which is also its process group (and session) id.
    pub pid: i32,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// Resolves when the leader has been reaped.
    pub exit: ExitWaiter,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start a service with an empty command; set `command`")]
    EmptyCommand,
    #[error("cannot start `{program}`: {what} contains a NUL byte")]
    NulByte { program: String, what: &'static str },
    #[error(
        "cannot start `{program}`: `{key}` is not a valid environment variable name \
         (empty or containing `=`)"
    )]
    BadEnvName { program: String, key: String },
    #[error("cannot start `{program}`: process spawning needs a tokio runtime")]
    NoRuntime { program: String },
    #[error(
        "cannot start `{program}`: not found in {DEFAULT_SEARCH_PATH} (the service environment \
         has no PATH); use an absolute path or set PATH in `environment`"
    )]
    NotFound { program: String },
    #[error(
        "cannot start `{program}`: {source}; check `command` and PATH in the service environment, \
         and that the program is executable by the service user"
    )]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot start `{program}`: working_dir `{}`: {source}; check that it exists, is a \
         directory and is accessible to the service user",
        dir.display()
    )]
    WorkingDir {
        program: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot start `{program}`: the kernel refused {limit} = {value}: {source}; lower the limit \
         (max_fds cannot exceed /proc/sys/fs/nr_open)"
    )]
    Limit {
        program: String,
        limit: &'static str,
        value: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot start `{program}` as uid {uid} gid {gid}: {step} failed: {source}; the daemon \
         must run as root to switch users"
    )]
    User {
        program: String,
        uid: u32,
        gid: u32,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{program}`: {step} failed in the new process: {source}")]
    Setup {
        program: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Starts `spec` as the leader of a new session and process group. Must be
/// called inside a tokio runtime (the output pipes are registered with it).
///
/// This blocks the calling thread for the fork and until the child has
/// called `exec` (std reports a failed exec as this function's error),
/// typically well under a millisecond.
pub fn spawn(spec: &ProcessSpec) -> Result<Spawned, SpawnError> {
    let name = spec.argv.first().ok_or(SpawnError::EmptyCommand)?;
    let program = || name.clone();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SpawnError::NoRuntime { program: program() });
    }
    check_no_nul(spec)?;
    let executable = resolve_program(name, &spec.env)?;
    let setup =
        ChildSetup::prepare(&spec.working_dir, spec.user.as_ref(), &spec.limits).map_err(|_| {
            SpawnError::NulByte {
                program: program(),
                what: "working_dir",
            }
        })?;
    let reaper = reaper().map_err(|source| SpawnError::Io {
        program: program(),
        source,
    })?;

    let mut command = Command::new(&executable);
    command
        .arg0(name)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(spec.stdout.stdio())
        .stderr(spec.stderr.stdio());
    let setup = Arc::new(setup);
    let child_setup = Arc::clone(&setup);
    // SAFETY: `apply` only makes async-signal-safe syscalls on data prepared
    // above; it neither allocates nor takes locks.
    unsafe {
        command.pre_exec(move || child_setup.apply());
    }

    let (mut child, exit) = reaper
        .track(|| command.spawn())
        .map_err(|err| explain(err, name, spec, &setup))?;
    let pid = exit.pid();

    let pipes = (|| {
        let stdout = child.stdout.take().map(into_receiver).transpose()?;
        let stderr = child.stderr.take().map(into_receiver).transpose()?;
        Ok::<_, io::Error>((stdout, stderr))
    })();
    match pipes {
        Ok((stdout, stderr)) => Ok(Spawned {
            pid,
            stdout,
            stderr,
            exit,
        }),
        Err(source) => {
            // Nothing may be left behind: the reaper collects it.
            let _ = signal_group(pid, Signal::SIGKILL);
            Err(SpawnError::Io {
                program: program(),
                source,
            })
        }
    }
}

fn into_receiver(pipe: impl Into<OwnedFd>) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(pipe.into())
}

/// std would report a NUL byte as an opaque "nul byte found" and accept
/// `A=B` as a name; say what is wrong instead.
fn check_no_nul(spec: &ProcessSpec) -> Result<(), SpawnError> {
    let nul = |what| SpawnError::NulByte {
        program: spec.argv[0].clone(),
        what,
    };
    if spec.argv.iter().any(|arg| arg.contains('\0')) {
        return Err(nul("`command`"));
    }
    if spec
        .env
        .iter()
        .any(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        return Err(nul("an `environment` entry"));
    }
    if let Some(key) = spec
        .env
        .keys()
        .find(|key| key.is_empty() || key.contains('='))
    {
        return Err(SpawnError::BadEnvName {
            program: spec.argv[0].clone(),
            key: key.clone(),
        });
    }
    Ok(())
}

/// See the module docs for the lookup rules.
fn resolve_program(name: &str, env: &BTreeMap<String, String>) -> Result<PathBuf, SpawnError> {
    if name.contains('/') || env.contains_key("PATH") {
        return Ok(PathBuf::from(name));
    }
    DEFAULT_SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| SpawnError::NotFound {
            program: name.to_owned(),
        })
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Turns std's spawn error into one that says which step failed.
fn explain(err: io::Error, name: &str, spec: &ProcessSpec, setup: &ChildSetup) -> SpawnError {
    let program = name.to_owned();
    let Some(ChildFailure {
        stage,
        detail,
        errno,
    }) = decode_error(&err)
    else {
        return SpawnError::Exec {
            program,
            source: err,
        };
    };
    let source = io::Error::from_raw_os_error(errno);
    let (uid, gid) = spec
        .user
        .as_ref()
        .map_or((0, 0), |user| (user.uid, user.gid));
    let user_step = |step| SpawnError::User {
        program: program.clone(),
        uid,
        gid,
        step,
        source: io::Error::from_raw_os_error(errno),
    };
    match stage {
        Stage::WorkingDir => SpawnError::WorkingDir {
            program,
            dir: spec.working_dir.clone(),
            source,
        },
        Stage::Limit => match setup.limit_at(detail) {
            Some((kind, value)) => SpawnError::Limit {
                program,
                limit: kind.config_key(),
                value,
                source,
            },
            None => SpawnError::Setup {
                program,
                step: "setrlimit",
                source,
            },
        },
        Stage::Groups => user_step("setgroups"),
        Stage::Gid => user_step("setgid"),
        Stage::Uid => user_step("setuid"),
        Stage::RegainedRoot => SpawnError::User {
            program: program.clone(),
            uid,
            gid,
            step: "dropping root",
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                "setuid(0) still succeeded after switching users",
            ),
        },
        Stage::Setsid => SpawnError::Setup {
            program,
            step: "setsid",
            source,
        },
        Stage::Signals => SpawnError::Setup {
            program,
            step: "resetting signals",
            source,
        },
    }
}
