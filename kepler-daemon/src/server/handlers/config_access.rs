//! Finding the config a request is about, and whether the caller may touch it.

use kepler_protocol::{ConfigRef, ErrorKind};

use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};

/// The config's actor, loaded on first use, if the caller owns it (or is root).
pub async fn config_for(
    ctx: &RequestContext,
    config: &ConfigRef,
) -> Result<ConfigHandle, ActorError> {
    if ctx.daemon.is_shutting_down() {
        return Err(ActorError::new(
            ErrorKind::ShuttingDown,
            "the daemon is shutting down and takes no new work",
        ));
    }
    let handle = ctx
        .daemon
        .registry()
        .get_or_load(config, &ctx.caller)
        .await?;
    ensure_owner(ctx, &handle)?;
    Ok(handle)
}

/// Root may act on every config; anyone else only on the configs they loaded.
pub fn ensure_owner(ctx: &RequestContext, handle: &ConfigHandle) -> Result<(), ActorError> {
    if ctx.caller.is_root() || handle.owner_uid() == ctx.caller.uid {
        Ok(())
    } else {
        Err(ActorError::new(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied: {} belongs to uid {}, and only its owner or root may \
                 manage it",
                handle.path().display(),
                handle.owner_uid()
            ),
        ))
    }
}
