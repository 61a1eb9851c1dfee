//! Baking a config in a worker process, with the caller's rights.
//!
//! Baking reads the config, its env files and Lua modules, and runs Lua. Done
//! by the root daemon for a non-root caller, it would read any file on the
//! machine (`env_file: /etc/shadow`) on their behalf; done inside the daemon
//! at all, a hostile config could cost it memory or time. So the daemon runs
//! a copy of itself (`kepler-daemon check --transfer FILE`) as the caller's
//! uid, gid and groups, with the caller's environment, under memory and CPU
//! limits, and takes back the baked result as JSON on its stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kepler_protocol::ErrorKind;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::config::{Baked, EnvFileCopy};
use crate::config_actor::ActorError;
use crate::process::{self, OutputMode, ProcessSpec, ResourceLimits};
use crate::server::Caller;
use crate::user::ResolvedUser;

/// A bake worker may not take longer than this (Lua alone is capped at 1 s
/// per block).
const BAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer accepted from a worker.
const MAX_OUTPUT: u64 = 64 * 1024 * 1024;

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

/// What a bake worker prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub snapshot: String,
    pub source_text: String,
    pub env_files: Vec<(PathBuf, String)>,
}

impl Transfer {
    pub fn from_baked(baked: &Baked) -> Self {
        Transfer {
            snapshot: crate::config::render_snapshot(&baked.config),
            source_text: baked.source_text.clone(),
            env_files: baked
                .env_files
                .iter()
                .map(|f| (f.path.clone(), f.contents.clone()))
                .collect(),
        }
    }

    fn into_baked(self) -> Result<Baked, String> {
        Ok(Baked {
            config: crate::config::load_snapshot(&self.snapshot).map_err(|e| e.to_string())?,
            source_text: self.source_text,
            env_files: self
                .env_files
                .into_iter()
                .map(|(path, contents)| EnvFileCopy { path, contents })
                .collect(),
        })
    }
}

/// Bakes `path` as `caller` in a separate, limited process.
pub async fn bake_as(
    caller: &Caller,
    path: &Path,
    sys_env: &BTreeMap<String, String>,
) -> Result<Baked, ActorError> {
    let failed = |message: String| ActorError::new(ErrorKind::Failed, message);
    let exe = match WORKER.get() {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()
            .map_err(|e| failed(format!("cannot find kepler-daemon: {e}")))?,
    };
    let mut groups = caller.groups.clone();
    if !groups.contains(&caller.gid) {
        groups.push(caller.gid);
    }
    let user = (!caller.is_root()).then_some(ResolvedUser {
        uid: caller.uid,
        gid: caller.gid,
        supplementary: groups,
        name: None,
        home: None,
    });
    let spec = ProcessSpec {
        argv: vec![
            exe.to_string_lossy().into_owned(),
            "check".into(),
            "--transfer".into(),
            path.to_string_lossy().into_owned(),
        ],
        env: sys_env.clone(),
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
    let spawned =
        process::spawn(&spec).map_err(|e| failed(format!("cannot start the bake worker: {e}")))?;
    let pgid = spawned.pid;
    let work = async move {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (out, err) = (spawned.stdout, spawned.stderr);
        let read_out = async {
            if let Some(pipe) = out {
                let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut stdout).await;
            }
        };
        let read_err = async {
            if let Some(pipe) = err {
                let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut stderr).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = spawned.exit.await;
        (status, stdout, stderr)
    };
    let (status, stdout, stderr) = match tokio::time::timeout(BAKE_TIMEOUT, work).await {
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
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr).trim_end().to_string();
        return Err(ActorError::new(ErrorKind::InvalidConfig, text));
    }
    let transfer: Transfer = serde_json::from_slice(&stdout)
        .map_err(|e| failed(format!("the bake worker answered garbage: {e}")))?;
    transfer.into_baked().map_err(failed)
}
