//! What the daemon answers, and the events it pushes while a request runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    /// The request was carried out and has nothing to report.
    Done,
    DaemonStatus(DaemonStatus),
    /// The daemon accepted `Shutdown` and will exit once its services are stopped.
    ShuttingDown {
        pid: u32,
    },
    /// The configs `ps` asked for. Their services come first as
    /// [`Event::PsPart`]s (a config's parts in order, each at most
    /// [`PS_PART_SERVICES`]), then any left here; a client appends these
    /// to what the parts of the same path brought.
    Ps(Vec<ConfigServices>),
    Pruned(Vec<PrunedConfig>),
    /// Log lines, oldest first; `cursor` is set when more can be asked for
    /// with `Request::LogsPage`.
    LogPage {
        lines: crate::LogBatch,
        cursor: Option<u64>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// `start`/`restart -d --wait` is done: the startup-cluster services of
    /// the request are ready; the deferred ones carry on in the background.
    Started {
        ready: Vec<String>,
        deferred: Vec<String>,
    },
    /// The config is not loaded (never started, or pruned), and the request
    /// does not load one: there is nothing to show or stop.
    NotLoaded {
        path: PathBuf,
    },
    /// An attached `Run` is over: every service has ended. `exit_code` is
    /// what `kepler run` exits with; `cause` says which service decided it
    /// when it is not 0; `cleanup_error` why the config's state was kept
    /// although it should have been removed.
    RunEnded {
        exit_code: i32,
        cause: Option<String>,
        cleanup_error: Option<String>,
    },
    /// `kepler scale` is done: new instances run, surplus ones are down.
    Scaled(Vec<ScaledService>),
    Stats(crate::ConfigStats),
    Inspect(crate::ConfigInspection),
    /// `kepler daemon upgrade` was accepted: the daemon (this pid) is
    /// handing over to `binary`, which said it can resume it. Connect again
    /// to reach the new daemon: connections queue meanwhile.
    Upgrading {
        pid: u32,
        from_version: String,
        binary: PathBuf,
    },
}

/// One service's change of instance count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaledService {
    pub service: String,
    pub from: u32,
    pub to: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The caller may not do this.
    PermissionDenied,
    /// The request named a config, service or file that does not exist.
    NotFound,
    /// The config is not valid; the message lists every problem.
    InvalidConfig,
    /// The request conflicts with the current state (e.g. recreate while running).
    Conflict,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// The request was well-formed but failed.
    Failed,
    /// A bound on what one client may ask for was reached (connections,
    /// requests in flight, environment size); the message names it.
    LimitReached,
    /// The daemon handed over to a new binary while this request ran; the
    /// request ended there. Reconnect to reach the new daemon.
    DaemonUpgraded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    pub state_dir: PathBuf,
    pub configs: Vec<ConfigSummary>,
    /// How services are contained: `cgroup v2 at <path>` or `process groups
    /// (no writable cgroup v2: <reason>)`.
    pub containment: String,
    /// Limits of loaded configs that are not enforced as configured, each
    /// naming the config, service and key, and why.
    pub limit_notes: Vec<String>,
    /// The daemon's open-file limit: descriptors open, the limit, the
    /// reserve kept from spawns, what services get, how output pipes are held.
    pub open_files: String,
    /// The daemon's CPU priority against its services': nicenesses, and
    /// whether its session was raised too.
    pub priority: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub path: PathBuf,
    pub services: usize,
    pub running: usize,
}

/// The services of one config, for `ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigServices {
    pub path: PathBuf,
    pub services: Vec<ServiceInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub status: ServiceStatus,
    pub pid: Option<u32>,
    /// Seconds since the current process started, while it runs.
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    /// Consecutive failed health probes, when the service has a healthcheck.
    pub health_failures: Option<u32>,
    /// Why the service is in its state (failure reason, what it waits for).
    pub reason: Option<String>,
    /// CPU use since the previous `ps` (100 = one CPU), while it runs.
    pub cpu_percent: Option<f64>,
    /// Memory in use now, in bytes, while it runs.
    pub memory_bytes: Option<u64>,
    /// CPU time used by the current process and its children, in seconds.
    pub cpu_seconds: Option<f64>,
    /// The service this is an instance of (`web` for `web.2`); the same as
    /// `name` for a service without `replicas:`.
    pub service: String,
    /// The instance's replica number (`2` for `web.2`), when the service has
    /// `replicas:`.
    pub replica: Option<u32>,
}

/// A service's state as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceStatus {
    /// Never started, or stopped by the user.
    Stopped,
    /// Waiting for dependencies or being spawned.
    Starting,
    Running,
    Healthy,
    Unhealthy,
    Stopping,
    /// The process ended on its own with this exit code (128+N for signal N).
    Exited(i32),
    /// Could not start or was given up on; see the reason.
    Failed,
}

impl ServiceStatus {
    pub fn name(self) -> String {
        match self {
            ServiceStatus::Stopped => "stopped".into(),
            ServiceStatus::Starting => "starting".into(),
            ServiceStatus::Running => "running".into(),
            ServiceStatus::Healthy => "healthy".into(),
            ServiceStatus::Unhealthy => "unhealthy".into(),
            ServiceStatus::Stopping => "stopping".into(),
            ServiceStatus::Exited(code) => format!("exited ({code})"),
            ServiceStatus::Failed => "failed".into(),
        }
    }

    /// Running, healthy or unhealthy: a process is up.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            ServiceStatus::Running | ServiceStatus::Healthy | ServiceStatus::Unhealthy
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunedConfig {
    pub path: PathBuf,
    pub state_dir: PathBuf,
    /// Why it was (or, in a dry run, would be) removed, or why it was kept.
    pub note: String,
    pub removed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A line for a person, e.g. progress of a long operation.
    Progress { message: String },
    /// A service changed state.
    ServiceState {
        service: String,
        status: ServiceStatus,
        reason: Option<String>,
    },
    /// A line of a service's (or hook's) output.
    Log(LogLine),
    /// Several lines at once (log follow).
    Logs(Vec<LogLine>),
    /// Sent first by a `--wait` start, restart or run: the services it
    /// waits for, in dependency order; their `ServiceState`s follow.
    StartupPlan { services: Vec<WaitedService> },
    /// What `kepler top` shows now.
    Top(crate::TopFrame),
    /// Part of a `ps` answer: some services of one config, in order.
    PsPart(ConfigServices),
}

/// Most services in one [`Event::PsPart`], so a `ps` of thousands of
/// services is many modest frames, never one near [`crate::MAX_FRAME_LEN`].
pub const PS_PART_SERVICES: usize = 512;

/// A service that `--wait` waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitedService {
    pub name: String,
    /// It is ready once healthy, not once running.
    pub healthcheck: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    /// The hook that wrote the line, when it was not the service itself.
    pub hook: Option<String>,
    pub stderr: bool,
    pub timestamp_us: u64,
    /// The service asks for its lines to be shown with their time
    /// (`logs.timestamp: true`).
    pub show_time: bool,
    /// The instance number, when `service` is an instance of a replicated
    /// service (`web.2` is instance 2 of `web`).
    pub replica: Option<u32>,
    /// Raw bytes; shown lossily when they are not UTF-8. Encoded as one
    /// byte string, not a sequence of numbers (a large log is mostly this).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}
