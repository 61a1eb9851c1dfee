//! The wire contract between `kepler` (the CLI) and `kepler-daemon`.
//!
//! Everything that crosses the Unix socket is defined here and nowhere else:
//! the handshake, the request and response enums, the events the daemon pushes,
//! and the framing (a length prefix plus a bincode body). Both binaries depend on
//! this crate, so a change to the contract is a change to one place. The one
//! contract that does not cross the socket, the JSON view of a baked config
//! that `kepler-daemon check --json` gives `kepler export`, lives here too.

pub mod codec;
pub mod config_view;
pub mod handshake;
pub mod limits;
pub mod log_batch;
pub mod message;
pub mod observe;
pub mod request;
pub mod response;

pub use codec::{BincodeCodec, FrameError, MAX_FRAME_LEN};
pub use handshake::{Hello, HelloReply, PROTOCOL_VERSION};
pub use limits::{
    check_grep, check_sys_env, MAX_GREP_LEN, MAX_REQUEST_LEN, MAX_SYS_ENV_BYTES, MAX_SYS_ENV_VARS,
};
pub use log_batch::{LogBatch, LogLineRef, LogSource};
pub use message::{ClientMessage, RequestId, ServerMessage};
pub use observe::{
    ConfigInspection, ConfigStats, HealthInspection, LastSample, ServiceHistory, ServiceInspection,
    ServiceStats, Spread, TopConfig, TopFrame,
};
pub use request::{ConfigRef, LogFilter, LogRange, Request, RunOptions, StartMode, SysEnv};
pub use response::{
    ConfigServices, ConfigSummary, DaemonStatus, ErrorKind, Event, LogLine, PrunedConfig, Response,
    ScaledService, ServiceInfo, ServiceStatus, WaitedService, PS_PART_SERVICES,
};

/// Name of the socket file inside the daemon's state directory.
pub const SOCKET_FILE: &str = "kepler.sock";
/// Name of the pid file inside the daemon's state directory.
pub const PID_FILE: &str = "kepler.pid";
/// Default state directory when `KEPLER_DAEMON_PATH` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kepler";
/// Environment variable that overrides the state directory.
pub const STATE_DIR_ENV: &str = "KEPLER_DAEMON_PATH";
/// The group whose members may talk to the daemon.
pub const KEPLER_GROUP: &str = "kepler";

/// The state directory that both the daemon and the CLI agree on.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_STATE_DIR))
}
