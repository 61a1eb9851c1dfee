//! `kepler daemon stop`: acknowledge, then let the daemon stop everything and exit.

use kepler_protocol::{ErrorKind, Response};

use super::RequestContext;

/// Stopping the daemon stops everyone's services, so only root may.
pub async fn handle(ctx: &RequestContext) -> Response {
    if !ctx.caller.is_root() {
        return Response::Error {
            kind: ErrorKind::PermissionDenied,
            message: "permission denied: stopping the daemon stops every user's services, so \
                      only root may; use `kepler stop` for your own"
                .into(),
        };
    }
    ctx.daemon.request_shutdown();
    Response::ShuttingDown {
        pid: std::process::id(),
    }
}
