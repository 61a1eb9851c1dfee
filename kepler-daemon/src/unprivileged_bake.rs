//! Baking a config in a worker process, with its owner's rights.
//!
//! Baking reads the config, its env files and Lua modules, and runs Lua. Done
//! by the root daemon for a member's config, it would read any file on the
//! machine (`env_file: /etc/shadow`) on their behalf; done inside the daemon
//! at all, a hostile config could cost it memory or time. So the daemon runs
//! a copy of itself (`kepler-daemon check --transfer FILE`) as the config's
//! owner, under memory and CPU limits, and takes back the baked result.
//!
//! The worker is hostile once it runs: it runs as the owner, who can attach
//! to it or feed it anything. So it starts with a fixed environment (`PATH`
//! and `LANG=C` only: no `LD_PRELOAD`, no loader or locale tricks) and gets
//! the caller's captured environment as data on its stdin; it is killed if
//! the daemon dies; and its answer is treated as untrusted input: bounded
//! JSON (no aliases, at most [`MAX_SNAPSHOT_BYTES`] counted while reading)
//! whose config passes every check of [`check_snapshot`] before the daemon
//! uses it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kepler_protocol::ErrorKind;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{check_snapshot, Baked, BakedConfig, EnvFileCopy, MAX_SNAPSHOT_BYTES};
use crate::config_actor::ActorError;
use crate::process::{self, OutputMode, ProcessSpec, ResourceLimits, SpawnOptions};
use crate::user::ResolvedUser;

/// A bake worker may not take longer than this (Lua alone is capped at 1 s
/// per block).
const BAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most of a worker's error output kept (the config's error list).
const MAX_ERRORS: u64 = 1024 * 1024;
/// Largest input a worker accepts on stdin (the caller's environment).
pub const MAX_WORKER_INPUT: u64 = 64 * 1024 * 1024;
/// The whole environment a worker starts with.
const WORKER_ENV: [(&str, &str); 2] = [("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), ("LANG", "C")];

/// Address space a bake worker may use (Lua alone is capped at 64 MiB).
const WORKER_MEMORY: u64 = 2 * 1024 * 1024 * 1024;
/// CPU seconds a bake worker may use.
const WORKER_CPU_SECS: u64 = 30;

static WORKER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes every bake run in a worker started from `exe` (the daemon binary
/// calls this at start-up). Without it, root's bakes run in-process, which is
/// what in-process tests of the library need.
pub fn use_worker(exe: PathBuf) {
    let _ = WORKER.set(exe);
}

/// Whether bakes for root also go through a worker.
pub fn worker_configured() -> bool {
    WORKER.get().is_some()
}

/// Whose rights a bake runs with: root's, or a user's (never more than the
/// config file's owner has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BakeAs {
    Root,
    User(ResolvedUser),
}

/// What the daemon sends a worker on its stdin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerInput {
    /// The environment the CLI captured, for `${VAR}` and `sys_env`.
    pub sys_env: BTreeMap<String, String>,
}

impl WorkerInput {
    /// Reads the input from `reader` (a worker's stdin), at most
    /// [`MAX_WORKER_INPUT`] bytes.
    pub fn read_from(reader: impl Read) -> Result<Self, String> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_WORKER_INPUT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the bake input: {e}"))?;
        if bytes.len() as u64 > MAX_WORKER_INPUT {
            return Err(format!(
                "the bake input is larger than {MAX_WORKER_INPUT} bytes"
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("the bake input is not valid: {e}"))
    }
}

/// What a bake worker prints: JSON, no aliases.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub config: BakedConfig,
    pub source_text: String,
    pub env_files: Vec<(PathBuf, String)>,
}

impl Transfer {
    pub fn from_baked(baked: &Baked) -> Self {
        Transfer {
            config: baked.config.clone(),
            source_text: baked.source_text.clone(),
            env_files: baked
                .env_files
                .iter()
                .map(|f| (f.path.clone(), f.contents.clone()))
                .collect(),
        }
    }

    /// Decodes and checks a worker's answer (already bounded by its reader).
    pub fn decode(answer: &[u8]) -> Result<Baked, String> {
        let transfer: Transfer = serde_json::from_slice(answer)
            .map_err(|e| format!("the bake worker's answer is not valid: {e}"))?;
        check_snapshot(&transfer.config)
            .map_err(|e| format!("the bake worker's answer was refused: {e}"))?;
        if let Some((path, _)) = transfer
            .env_files
            .iter()
            .find(|(path, _)| !path.is_absolute() || path.file_name().is_none())
        {
            return Err(format!(
                "the bake worker's answer was refused: env file `{}` is not an absolute file path",
                path.display()
            ));
        }
        Ok(Baked {
            config: transfer.config,
            source_text: transfer.source_text,
            env_files: transfer
                .env_files
                .into_iter()
                .map(|(path, contents)| EnvFileCopy { path, contents })
                .collect(),
        })
    }
}

/// Reads all of `pipe`, keeping at most `limit` bytes; past that the worker
/// is killed (it could otherwise block on a full pipe until the timeout) and
/// the second value is true.
pub(crate) async fn read_bounded(
    pipe: Option<tokio::net::unix::pipe::Receiver>,
    limit: u64,
    pgid: i32,
) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(limit + 1).read_to_end(&mut bytes).await;
    }
    let over = bytes.len() as u64 > limit;
    if over {
        let _ = process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        bytes.truncate(limit as usize);
    }
    (bytes, over)
}

/// Bakes `path` in a separate, limited process running as `who`, with
/// `sys_env` as the captured environment.
pub async fn bake_as(
    who: &BakeAs,
    path: &Path,
    sys_env: &BTreeMap<String, String>,
) -> Result<Baked, ActorError> {
    let failed = |message: String| ActorError::new(ErrorKind::Failed, message);
    let exe = match WORKER.get() {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()
            .map_err(|e| failed(format!("cannot find kepler-daemon: {e}")))?,
    };
    let user = match who {
        BakeAs::Root => None,
        BakeAs::User(user) => Some(user.clone()),
    };
    let spec = ProcessSpec {
        argv: vec![
            exe.to_string_lossy().into_owned(),
            "check".into(),
            "--transfer".into(),
            path.to_string_lossy().into_owned(),
        ],
        env: WORKER_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        working_dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "/".into()),
        user,
        limits: ResourceLimits {
            memory_bytes: Some(WORKER_MEMORY),
            cpu_time_secs: Some(WORKER_CPU_SECS),
            max_fds: None,
        },
        umask: crate::config::DEFAULT_UMASK.0,
        stdout: OutputMode::Pipe,
        stderr: OutputMode::Pipe,
    };
    let input = serde_json::to_vec(&WorkerInput {
        sys_env: sys_env.clone(),
    })
    .expect("an environment always serialises");
    let options = SpawnOptions {
        stdin_pipe: true,
        die_with_daemon: true,
    };
    let spawned = process::spawn_with(&spec, options)
        .map_err(|e| failed(format!("cannot start the bake worker: {e}")))?;
    let pgid = spawned.pid;
    let work = async move {
        let write_input = async {
            if let Some(mut stdin) = spawned.stdin {
                // A worker that does not read its input fails on its own.
                let _ = stdin.write_all(&input).await;
            }
        };
        let (_, answer, errors) = tokio::join!(
            write_input,
            read_bounded(spawned.stdout, MAX_SNAPSHOT_BYTES, pgid),
            read_bounded(spawned.stderr, MAX_ERRORS, pgid),
        );
        let status = spawned.exit.await;
        (status, answer, errors)
    };
    let (status, answer, errors) = match tokio::time::timeout(BAKE_TIMEOUT, work).await {
        Ok(done) => done,
        Err(_) => {
            process::reap_leftovers(pgid).await;
            return Err(failed(format!(
                "baking {} took longer than {BAKE_TIMEOUT:?} and was stopped",
                path.display()
            )));
        }
    };
    process::reap_leftovers(pgid).await;
    let (answer, too_large) = answer;
    if too_large {
        return Err(failed(format!(
            "the bake worker's answer for {} is larger than {} MiB and was refused",
            path.display(),
            MAX_SNAPSHOT_BYTES >> 20
        )));
    }
    if !status.success() {
        let text = String::from_utf8_lossy(&errors.0).trim_end().to_string();
        return Err(ActorError::new(ErrorKind::InvalidConfig, text));
    }
    Transfer::decode(&answer).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str) -> Vec<u8> {
        let env = BTreeMap::new();
        let baked = crate::config::bake_source(
            Path::new("/srv/app/kepler.yaml"),
            "services:\n  web:\n    command: [\"./web\"]\n".to_owned(),
            &env,
        )
        .unwrap();
        let mut transfer = Transfer::from_baked(&baked);
        let service = transfer.config.services.remove("web").unwrap();
        transfer.config.services.insert(name.to_owned(), service);
        serde_json::to_vec(&transfer).unwrap()
    }

    #[test]
    fn an_honest_answer_decodes() {
        let baked = Transfer::decode(&answer("web")).unwrap();
        assert!(baked.config.services.contains_key("web"));
    }

    #[test]
    fn a_forged_name_is_refused_with_a_clear_message() {
        let err = Transfer::decode(&answer("../../../tmp/x")).unwrap_err();
        assert!(
            err.contains("the bake worker's answer was refused"),
            "{err}"
        );
        assert!(err.contains("not a valid service name"), "{err}");
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_limit_and_its_writer_killed() {
        let spec = ProcessSpec {
            argv: vec!["cat".into(), "/dev/zero".into()],
            env: WORKER_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            working_dir: "/".into(),
            user: None,
            limits: ResourceLimits::default(),
            umask: crate::config::DEFAULT_UMASK.0,
            stdout: OutputMode::Pipe,
            stderr: OutputMode::Null,
        };
        let spawned = process::spawn(&spec).unwrap();
        let limit = 1 << 20;
        let (bytes, over) = read_bounded(spawned.stdout, limit, spawned.pid).await;
        assert!(over);
        assert_eq!(bytes.len() as u64, limit);
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), spawned.exit)
            .await
            .expect("the writer was killed");
        assert!(!status.success());
    }

    #[test]
    fn the_input_is_bounded_while_reading() {
        let endless = std::io::repeat(b' ');
        let err = WorkerInput::read_from(endless).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
    }
}
