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
    Error {
        kind: ErrorKind,
        message: String,
    },
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    pub state_dir: PathBuf,
    pub configs: Vec<ConfigSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub path: PathBuf,
    pub services: usize,
    pub running: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A line for a person, e.g. progress of a long operation.
    Progress { message: String },
}
