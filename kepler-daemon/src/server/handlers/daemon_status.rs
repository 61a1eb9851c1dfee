//! `kepler daemon status`: pid, version, uptime and loaded configs.

use kepler_protocol::{DaemonStatus, Response};

use super::RequestContext;

pub async fn handle(ctx: &RequestContext) -> Response {
    let daemon = &ctx.daemon;
    Response::DaemonStatus(DaemonStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: daemon.uptime().as_secs(),
        state_dir: daemon.state_dir().root().to_path_buf(),
        configs: Vec::new(),
    })
}
