//! `kepler daemon stop`: acknowledge, then let the daemon stop everything and exit.

use kepler_protocol::Response;

use super::RequestContext;

pub async fn handle(ctx: &RequestContext) -> Response {
    ctx.daemon.request_shutdown();
    Response::ShuttingDown {
        pid: std::process::id(),
    }
}
