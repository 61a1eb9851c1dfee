//! Finding the config a request is about, and whether the caller may touch it.
//!
//! Only the requests that may bake a config carry the caller's environment
//! ([`config_for`]); the others see a config only once it is loaded
//! ([`loaded_config`]), so they never bake.

use kepler_protocol::{check_sys_env, ConfigRef, ErrorKind, SysEnv};

use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};

/// The config's actor, baked with `sys_env` on first use, if the caller owns
/// it (or is root).
pub async fn config_for(
    ctx: &RequestContext,
    config: &ConfigRef,
    sys_env: &SysEnv,
) -> Result<ConfigHandle, ActorError> {
    // Checked before anything waits, so an oversized environment is dropped
    // at once instead of queueing behind a bake.
    check_sys_env(sys_env).map_err(|e| ActorError::new(ErrorKind::LimitReached, e))?;
    refuse_when_shutting_down(ctx)?;
    let handle = ctx
        .daemon
        .registry()
        .get_or_load(config, Some(sys_env), &ctx.caller)
        .await?
        .ok_or_else(|| {
            ActorError::new(
                ErrorKind::Failed,
                format!("{} could not be loaded", config.path.display()),
            )
        })?;
    ensure_owner(ctx, &handle)?;
    Ok(handle)
}

/// The config's actor if it is loaded (or has a snapshot to load from) and
/// the caller owns it (or is root); `None` if it is not loaded.
pub async fn loaded_config(
    ctx: &RequestContext,
    config: &ConfigRef,
) -> Result<Option<ConfigHandle>, ActorError> {
    refuse_when_shutting_down(ctx)?;
    let handle = ctx
        .daemon
        .registry()
        .get_or_load(config, None, &ctx.caller)
        .await?;
    if let Some(handle) = &handle {
        ensure_owner(ctx, handle)?;
    }
    Ok(handle)
}

fn refuse_when_shutting_down(ctx: &RequestContext) -> Result<(), ActorError> {
    if ctx.daemon.is_shutting_down() {
        return Err(ActorError::new(
            ErrorKind::ShuttingDown,
            "the daemon is shutting down and takes no new work",
        ));
    }
    Ok(())
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
