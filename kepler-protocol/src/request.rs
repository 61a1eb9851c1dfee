//! What the CLI can ask of the daemon.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with `Response::Pong`.
    Ping,
    /// Daemon pid, uptime, version and loaded configs.
    DaemonStatus,
    /// Stop every service of every config, then exit.
    Shutdown,
}
