//! `kepler daemon status`: pid, version, uptime, loaded configs, how
//! services are contained and which limits are not enforced.

use kepler_protocol::{ConfigSummary, DaemonStatus, Response};

use super::config_access::may_act_on;
use super::RequestContext;

pub async fn handle(ctx: &RequestContext) -> Response {
    let daemon = &ctx.daemon;
    let mut configs = Vec::new();
    let mut limit_notes = Vec::new();
    for handle in daemon.registry().all() {
        // Non-root callers see only their own configs.
        if !may_act_on(ctx, &handle) {
            continue;
        }
        let mut summary = handle.summary().await;
        if let Some(summary) = summary.as_mut() {
            limit_notes.append(&mut summary.limit_notes);
        }
        configs.push(ConfigSummary {
            path: handle.path().to_path_buf(),
            services: summary
                .as_ref()
                .map_or(handle.service_count(), |s| s.services),
            running: summary.map_or(0, |s| s.running),
        });
    }
    Response::DaemonStatus(DaemonStatus {
        pid: std::process::id(),
        version: crate::upgrade::daemon_version(),
        uptime_secs: daemon.uptime().as_secs(),
        state_dir: daemon.state_dir().root().to_path_buf(),
        configs,
        containment: crate::containment::current().describe(),
        limit_notes,
        open_files: open_files(),
        priority: crate::process::priority::describe(),
    })
}

/// The descriptor budget, and whether output pipes are descriptors at all.
fn open_files() -> String {
    let pipes = match crate::logs::held::availability() {
        Ok(()) => "output pipes held by io_uring, outside the limit".to_string(),
        Err(why) => format!("output pipes are descriptors ({why})"),
    };
    format!("{}; {pipes}", crate::process::descriptors::describe())
}
