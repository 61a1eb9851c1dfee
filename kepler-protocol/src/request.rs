//! What the CLI can ask of the daemon.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with `Response::Pong`.
    Ping,
    /// Daemon pid, uptime, version and loaded configs.
    DaemonStatus,
    /// Stop every service of every config, then exit.
    Shutdown,
    /// Start services (all when `services` is empty) and what they depend on.
    Start {
        config: ConfigRef,
        /// Used only if this request loads (bakes) the config.
        sys_env: SysEnv,
        services: Vec<String>,
        mode: StartMode,
    },
    /// Stop services (all when empty); dependents stop before dependencies.
    Stop {
        config: ConfigRef,
        services: Vec<String>,
        /// Signal number to send instead of each service's `stop_signal`.
        signal: Option<i32>,
        /// Run the `pre_cleanup` hook after stopping.
        clean: bool,
    },
    /// Stop then start services (all when empty).
    Restart {
        config: ConfigRef,
        /// Used only if this request loads (bakes) the config.
        sys_env: SysEnv,
        services: Vec<String>,
        mode: StartMode,
    },
    /// Bake the config again from its source file; refused while anything runs.
    Recreate { config: ConfigRef, sys_env: SysEnv },
    /// Remove the state of configs that have nothing running.
    Prune { force: bool, dry_run: bool },
    /// Service states of one config, or of every loaded config. A config
    /// that is not loaded is left out: `ps` never bakes.
    Ps { config: Option<ConfigRef> },
    /// Stored output of services (all when empty), merged in time order.
    /// Without `follow` the answer is a `LogPage`; a long log continues with
    /// `LogsPage`. With `follow`, lines are pushed as `Event::Logs` until the
    /// client goes away. A config that is not loaded has no logs: the answer
    /// is `NotLoaded`.
    Logs {
        config: ConfigRef,
        services: Vec<String>,
        range: LogRange,
        include_hooks: bool,
        follow: bool,
        /// Which lines, by time and text; `range` applies to what it keeps.
        filter: LogFilter,
    },
    /// The next page of a log opened by `Logs`.
    LogsPage { config: ConfigRef, cursor: u64 },
    /// `kepler run`: bake the config afresh from its file, start services
    /// (all when empty) as `Start` does in `mode`, and once every service
    /// has ended remove the config's stored state (unless
    /// `options.keep_state`). Attached, it answers `RunEnded` with the run's
    /// exit code.
    Run {
        config: ConfigRef,
        /// A run always bakes: the environment its config is baked with.
        sys_env: SysEnv,
        services: Vec<String>,
        mode: StartMode,
        options: RunOptions,
    },
    /// Change how many instances replicated services run (`SERVICE=COUNT`).
    /// Answered with `Response::Scaled` once new instances run (or failed)
    /// and surplus ones are down, or an error when `timeout_ms` passes.
    Scale {
        config: ConfigRef,
        services: Vec<(String, u32)>,
        timeout_ms: Option<u64>,
    },
    /// Usage of services (all when empty) over the last `since_ms`
    /// milliseconds (everything kept when `None`), from the stored history.
    Stats {
        config: ConfigRef,
        services: Vec<String>,
        since_ms: Option<u64>,
    },
    /// The config and its services (all when empty) in full.
    Inspect {
        config: ConfigRef,
        services: Vec<String>,
    },
    /// Subscribe to `Event::Top` frames of one config, or of every config
    /// the caller may see: one at once, then one after state changes and
    /// after each sampling tick, until the client goes away. The first frame
    /// carries up to `history` recent samples per service.
    Top {
        config: Option<ConfigRef>,
        history: u32,
    },
    /// Root only: hand the running daemon over to a new binary (`binary`,
    /// or the path the daemon was started from) without stopping services.
    Upgrade { binary: Option<std::path::PathBuf> },
}

/// How a `Run` ends and what it leaves behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Keep the config's snapshot, state and logs after the run.
    pub keep_state: bool,
    /// The first failure that will not be retried stops every service.
    pub abort_on_failure: bool,
    /// Stop every service once this one has ended, and take its exit code.
    pub exit_code_from: Option<String>,
}

/// A search of a log: lines stored between two moments, matching a
/// pattern. The default keeps every line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    /// Only lines stored at or after this time (Unix microseconds).
    pub since_us: Option<u64>,
    /// Only lines stored at or before this time (Unix microseconds).
    pub until_us: Option<u64>,
    /// Only lines matching this regular expression (the `regex` crate's
    /// syntax), at most [`crate::limits::MAX_GREP_LEN`] bytes.
    pub grep: Option<String>,
    /// Match `grep` ignoring case.
    pub ignore_case: bool,
}

impl LogFilter {
    /// Whether it keeps every line.
    pub fn is_everything(&self) -> bool {
        self.since_us.is_none() && self.until_us.is_none() && self.grep.is_none()
    }
}

/// Which stored lines `Logs` starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRange {
    All,
    Head(usize),
    Tail(usize),
}

/// Which config a request is about: the absolute, canonical path of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRef {
    pub path: PathBuf,
}

/// The environment of the CLI that sent a request that may bake a config
/// (`Start`, `Restart`, `Recreate`): the "system environment" of expansion
/// and of `sys_env: inherit`. Only those requests carry it, so a command
/// that only looks (`ps`, `logs`, `stop`) never hands the caller's
/// environment to whatever answers on the socket. The daemon never uses its
/// own environment for services. Bounded by [`crate::limits::check_sys_env`].
pub type SysEnv = BTreeMap<String, String>;

/// How long a start or restart request keeps the client waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartMode {
    /// Answer once the services are launched; startup continues in the background.
    Detached,
    /// Answer once the startup cluster is ready, or fail naming the service
    /// that failed or the timeout (milliseconds) that passed.
    Wait { timeout_ms: Option<u64> },
    /// Stream the config's output and state changes; answer once every service
    /// has reached a terminal state.
    Attached,
}
