//! `kepler daemon upgrade`: hand the daemon over to a new binary without
//! stopping a service. The work happens in the daemon's main loop
//! ([`crate::upgrade`]); this answers whether it was accepted.

use std::path::PathBuf;

use kepler_protocol::{ErrorKind, Response};
use tokio::sync::oneshot;

use super::RequestContext;
use crate::upgrade::{daemon_version, UpgradeRequest};

/// Replacing the daemon's binary is root's decision alone.
pub async fn handle(ctx: &RequestContext, binary: Option<PathBuf>) -> Response {
    if !ctx.caller.is_root() {
        return Response::Error {
            kind: ErrorKind::PermissionDenied,
            message: "permission denied: upgrading replaces the daemon's binary, so only root \
                      may; run `sudo kepler daemon upgrade`"
                .into(),
        };
    }
    if let Some(path) = &binary {
        if !path.is_absolute() {
            return Response::Error {
                kind: ErrorKind::Failed,
                message: format!(
                    "--binary {}: give an absolute path (the daemon does not know your \
                     working directory)",
                    path.display()
                ),
            };
        }
    }
    let (reply, answer) = oneshot::channel();
    if let Err(message) = ctx.daemon.request_upgrade(UpgradeRequest { binary, reply }) {
        return Response::Error {
            kind: ErrorKind::ShuttingDown,
            message,
        };
    }
    match answer.await {
        Ok(Ok(binary)) => Response::Upgrading {
            pid: std::process::id(),
            from_version: daemon_version(),
            binary,
        },
        Ok(Err(message)) => Response::Error {
            kind: ErrorKind::Conflict,
            message: format!("upgrade refused: {message}"),
        },
        Err(_) => Response::Error {
            kind: ErrorKind::ShuttingDown,
            message: "the daemon is shutting down; no upgrade".into(),
        },
    }
}
