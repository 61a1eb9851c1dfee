//! Starting a service's process: its own session and process group, the
//! exact environment it was configured with, its user, limits and output
//! pipes.
//!
//! Program lookup: a name containing `/` is used as is (relative names are
//! resolved inside `working_dir`). A bare name is searched in the service's
//! own `PATH` when its environment has one, else in [`DEFAULT_SEARCH_PATH`];
//! no `PATH` is added to the service's environment. The search is done by
//! the child as the service's user (see [`super::launch`]): the daemon only
//! lists the candidates, and never looks at the file system for a service.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::resource::{getrlimit, Resource};
use tokio::net::unix::pipe;

use super::child::{decode_error, ChildFailure, ChildSetup, Stage};
use super::launch::{self, Launch};
use super::limits::ResourceLimits;
use super::reaper::{reaper, ExitWaiter};
use super::scope::Scope;
use crate::containment::Cgroup;
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
    /// File-creation mask of the process (only the permission bits count).
    pub umask: u32,
    pub stdout: OutputMode,
    pub stderr: OutputMode,
}

/// How a process the daemon starts for itself differs from a service's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// stdin is a pipe the daemon writes ([`Spawned::stdin`]) instead of
    /// `/dev/null`.
    pub stdin_pipe: bool,
    /// The process gets SIGKILL when the daemon's thread that started it
    /// ends (`PR_SET_PDEATHSIG`): for helpers that must not outlive the
    /// daemon. Services deliberately survive a daemon crash.
    pub die_with_daemon: bool,
}

/// Where a service's stdout or stderr goes. stdin is `/dev/null` unless
/// [`SpawnOptions::stdin_pipe`] asks for a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// A pipe the daemon reads (non-blocking, registered with tokio).
    Pipe,
    /// `/dev/null`.
    Null,
}

/// A started service process.
#[derive(Debug)]
pub struct Spawned {
    /// The leader's pid, which is also its process group (and session) id.
    pub pid: i32,
    /// Every process it may start: its process group, or its cgroup.
    pub scope: Scope,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// With [`SpawnOptions::stdin_pipe`]: the write end of its stdin.
    pub stdin: Option<pipe::Sender>,
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
        "cannot start `{program}`: not found in {searched}; use an absolute path, or set PATH \
         in `environment` to the directory that holds it"
    )]
    NotFound { program: String, searched: String },
    #[error(
        "cannot start `{program}`: not found in {searched} as a program uid {uid} may run \
         (permission denied); make it and its directory accessible to the service user, or \
         set PATH in `environment` to a directory that holds it"
    )]
    SearchDenied {
        program: String,
        searched: String,
        uid: u32,
    },
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
        "cannot start `{program}` as uid {uid}: {limit} = {value} is above the hard limit \
         {hard} that uid {uid} has; lower it (only services that run as root may raise a hard \
         limit)"
    )]
    LimitAboveHard {
        program: String,
        uid: u32,
        limit: &'static str,
        value: u64,
        hard: u64,
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
    #[error(
        "cannot start `{program}`: cannot join its cgroup {}: {source}",
        cgroup.display()
    )]
    Cgroup {
        program: String,
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{program}`: {shortage}")]
    Descriptors {
        program: String,
        shortage: super::descriptors::Shortage,
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
/// This blocks the calling thread until the child has called `exec` (a
/// failed exec is this function's error), typically well under a
/// millisecond, whatever the size of the daemon.
pub fn spawn(spec: &ProcessSpec) -> Result<Spawned, SpawnError> {
    spawn_full(spec, SpawnOptions::default(), None)
}

/// [`spawn`] with the options of a helper process (see [`SpawnOptions`]).
pub fn spawn_with(spec: &ProcessSpec, options: SpawnOptions) -> Result<Spawned, SpawnError> {
    spawn_full(spec, options, None)
}

/// [`spawn`], with the child joining `cgroup` before anything else (see
/// [`crate::containment`]); `None` keeps it in the daemon's cgroup, contained
/// by its process group only.
pub fn spawn_into(spec: &ProcessSpec, cgroup: Option<Arc<Cgroup>>) -> Result<Spawned, SpawnError> {
    spawn_full(spec, SpawnOptions::default(), cgroup)
}

fn spawn_full(
    spec: &ProcessSpec,
    options: SpawnOptions,
    cgroup: Option<Arc<Cgroup>>,
) -> Result<Spawned, SpawnError> {
    let name = spec.argv.first().ok_or(SpawnError::EmptyCommand)?;
    let program = || name.clone();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SpawnError::NoRuntime { program: program() });
    }
    check_no_nul(spec)?;
    // Spawns stop short of the descriptors the rest of the daemon needs.
    super::descriptors::check_spawn().map_err(|shortage| SpawnError::Descriptors {
        program: program(),
        shortage,
    })?;
    let candidates = program_candidates(name, &spec.env);
    let setup = ChildSetup::prepare(
        &spec.working_dir,
        spec.user.as_ref(),
        &spec.limits,
        spec.umask,
        options.die_with_daemon,
    )
    .map_err(|_| SpawnError::NulByte {
        program: program(),
        what: "working_dir",
    })?;
    let reaper = reaper().map_err(|source| SpawnError::Io {
        program: program(),
        source,
    })?;

    let launch_failed = |source: io::Error| {
        out_of_descriptors(&source, program).unwrap_or_else(|| SpawnError::Io {
            program: program(),
            source,
        })
    };
    let to_c = |text: &[u8]| CString::new(text).expect("checked for NUL bytes above");
    let argv: Vec<CString> = spec.argv.iter().map(|a| to_c(a.as_bytes())).collect();
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(key, value)| to_c(format!("{key}={value}").as_bytes()))
        .collect();
    // Opened for this spawn only: a running service keeps no descriptor
    // (every descriptor the daemon holds is copied into each child it
    // clones, and closed again by each exec).
    let cgroup_dir = cgroup
        .as_deref()
        .map(|cgroup| cgroup.open_for_spawn())
        .transpose()
        .map_err(|source| {
            out_of_descriptors(&source, program).unwrap_or_else(|| SpawnError::Cgroup {
                program: program(),
                cgroup: cgroup
                    .as_ref()
                    .map(|c| c.dir().to_path_buf())
                    .unwrap_or_default(),
                source,
            })
        })?;
    let (stdin, stdin_write) = if options.stdin_pipe {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| launch_failed(e.into()))?;
        (read, Some(write))
    } else {
        (open_null(false).map_err(launch_failed)?, None)
    };
    let (stdout_read, stdout_write) = output_ends(spec.stdout).map_err(launch_failed)?;
    let (stderr_read, stderr_write) = output_ends(spec.stderr).map_err(launch_failed)?;
    let launch = Launch {
        programs: candidates
            .iter()
            .map(|path| to_c(path.as_os_str().as_bytes()))
            .collect(),
        search: !name.contains('/'),
        argv,
        envp,
        setup: &setup,
        stdin: &stdin,
        stdout: &stdout_write,
        stderr: &stderr_write,
        cgroup: cgroup_dir.as_ref().map(|fd| fd.as_fd()),
    };
    let (exec_error, exit) = reaper
        .track_pid(|| launch::launch(&launch))
        .map_err(|err| match decode_error(&err) {
            // clone3 could not place the child in its cgroup.
            Some(_) => explain(err, name, spec, &setup, cgroup.as_deref()),
            None => launch_failed(err),
        })?;
    // The child has its own copies now; ours must close so EOF can come.
    drop(launch);
    drop((stdin, stdout_write, stderr_write, cgroup_dir));
    if let Some(err) = exec_error {
        if let Some(cgroup) = &cgroup {
            crate::containment::remove_when_empty(cgroup);
        }
        return Err(explain(err, name, spec, &setup, cgroup.as_deref()));
    }
    let pid = exit.pid();
    let scope = match cgroup {
        Some(cgroup) => Scope::Cgroup {
            leader: pid,
            cgroup,
        },
        None => Scope::Group(pid),
    };

    // Kept while the service runs (the output pipes go to the log thread,
    // which keeps them out of the table itself).
    let stdin_write = stdin_write.map(super::descriptors::keep_high);
    let pipes = (|| {
        let stdout = stdout_read.map(pipe::Receiver::from_owned_fd).transpose()?;
        let stderr = stderr_read.map(pipe::Receiver::from_owned_fd).transpose()?;
        let stdin = stdin_write.map(pipe::Sender::from_owned_fd).transpose()?;
        Ok::<_, io::Error>((stdout, stderr, stdin))
    })();
    match pipes {
        Ok((stdout, stderr, stdin)) => Ok(Spawned {
            pid,
            scope,
            stdout,
            stderr,
            stdin,
            exit,
        }),
        Err(source) => {
            // Nothing may be left behind: the reaper collects it.
            scope.kill_now();
            Err(SpawnError::Io {
                program: program(),
                source,
            })
        }
    }
}

/// `/dev/null`, for stdin or a discarded output.
fn open_null(write: bool) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")?;
    Ok(file.into())
}

/// EMFILE as the [`SpawnError::Descriptors`] it means: the daemon itself ran
/// out (a child's own limit shows up as an exec or setup error instead).
fn out_of_descriptors(error: &io::Error, program: impl Fn() -> String) -> Option<SpawnError> {
    (error.raw_os_error() == Some(libc::EMFILE)).then(|| {
        let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
        SpawnError::Descriptors {
            program: program(),
            shortage: super::descriptors::Shortage {
                open: None,
                limit,
                reserve: super::descriptors::reserve(limit),
            },
        }
    })
}

/// The daemon's read end (if piped) and the child's write end of an output.
fn output_ends(mode: OutputMode) -> io::Result<(Option<OwnedFd>, OwnedFd)> {
    match mode {
        OutputMode::Pipe => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok((Some(read), write))
        }
        OutputMode::Null => Ok((None, open_null(true)?)),
    }
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

/// The paths the child tries, in order (see the module docs for the rules).
fn program_candidates(name: &str, env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    if name.contains('/') {
        return vec![PathBuf::from(name)];
    }
    env.get("PATH")
        .map(String::as_str)
        .unwrap_or(DEFAULT_SEARCH_PATH)
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .collect()
}

/// Where a bare name was looked for, for messages.
fn searched(env: &BTreeMap<String, String>) -> String {
    match env.get("PATH") {
        Some(path) => format!("the service's PATH ({path})"),
        None => format!("{DEFAULT_SEARCH_PATH} (the service environment has no PATH)"),
    }
}

/// Turns std's spawn error into one that says which step failed.
fn explain(
    err: io::Error,
    name: &str,
    spec: &ProcessSpec,
    setup: &ChildSetup,
    cgroup: Option<&Cgroup>,
) -> SpawnError {
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
    let not_root = spec.user.as_ref().is_some_and(|user| user.uid != 0);
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
        Stage::Limit => match (setup.limit_at(detail), setup.inherited_hard_limit(detail)) {
            (Some((kind, value)), Some(hard)) if not_root && errno == libc::EPERM => {
                SpawnError::LimitAboveHard {
                    program,
                    uid,
                    limit: kind.config_key(),
                    value,
                    hard,
                }
            }
            (Some((kind, value)), _) => SpawnError::Limit {
                program,
                limit: kind.config_key(),
                value,
                source,
            },
            (None, _) => SpawnError::Setup {
                program,
                step: "setrlimit",
                source,
            },
        },
        Stage::Search if errno == libc::EACCES => SpawnError::SearchDenied {
            program,
            searched: searched(&spec.env),
            uid,
        },
        Stage::Search => SpawnError::NotFound {
            program,
            searched: searched(&spec.env),
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
        Stage::ParentDeath => SpawnError::Setup {
            program,
            step: "tying it to the daemon",
            source,
        },
        Stage::Priority => SpawnError::Setup {
            program,
            step: "dropping back to the services' niceness",
            source,
        },
        Stage::Cgroup => SpawnError::Cgroup {
            program,
            cgroup: cgroup.map(|c| c.dir().to_path_buf()).unwrap_or_default(),
            source,
        },
    }
}
