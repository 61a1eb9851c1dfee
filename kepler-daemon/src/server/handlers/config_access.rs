//! Finding the config a request is about, and whether the caller may touch it.
//!
//! Only the requests that may bake a config carry the caller's environment
//! ([`config_for`]); the others see a config only once it is loaded
//! ([`loaded_config`]), so they never bake.

use kepler_protocol::{check_sys_env, ConfigRef, ErrorKind, SysEnv};

use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::config_identity::{identify, ConfigIdentity};

/// The config's actor, baked with `sys_env` on first use, if the caller may
/// act on it: root on every config, anyone else only on configs whose file
/// they own. Everyone else hears "not found or not yours", whether or not
/// the config was ever loaded.
pub async fn config_for(
    ctx: &RequestContext,
    config: &ConfigRef,
    sys_env: &SysEnv,
) -> Result<ConfigHandle, ActorError> {
    // Checked before anything waits, so an oversized environment is dropped
    // at once instead of queueing behind a bake.
    check_sys_env(sys_env).map_err(|e| ActorError::new(ErrorKind::LimitReached, e))?;
    taking_work(ctx)?;
    ctx.daemon
        .registry()
        .get_or_load(config, Some(sys_env), &ctx.caller)
        .await?
        .ok_or_else(|| could_not_load(config))
}

/// The config's actor if it is loaded (or has a snapshot to load from) and
/// the caller may act on it; `None` if it is not loaded. Never bakes.
pub async fn loaded_config(
    ctx: &RequestContext,
    config: &ConfigRef,
) -> Result<Option<ConfigHandle>, ActorError> {
    taking_work(ctx)?;
    ctx.daemon
        .registry()
        .get_or_load(config, None, &ctx.caller)
        .await
}

/// [`config_for`], with the file the request names as the daemon finds it
/// now (resolved with the caller's rights).
pub async fn config_and_file(
    ctx: &RequestContext,
    config: &ConfigRef,
    sys_env: &SysEnv,
) -> Result<(ConfigHandle, ConfigIdentity), ActorError> {
    check_sys_env(sys_env).map_err(|e| ActorError::new(ErrorKind::LimitReached, e))?;
    taking_work(ctx)?;
    let file = identify(&ctx.caller, &config.path).await?;
    let handle = ctx
        .daemon
        .registry()
        .get_or_load_file(&file, config, Some(sys_env), &ctx.caller)
        .await?
        .ok_or_else(|| could_not_load(config))?;
    Ok((handle, file))
}

fn could_not_load(config: &ConfigRef) -> ActorError {
    ActorError::new(
        ErrorKind::Failed,
        format!("{} could not be loaded", config.path.display()),
    )
}

fn taking_work(ctx: &RequestContext) -> Result<(), ActorError> {
    if ctx.daemon.is_shutting_down() {
        return Err(ActorError::new(
            ErrorKind::ShuttingDown,
            "the daemon is shutting down and takes no new work",
        ));
    }
    Ok(())
}

/// Whether the caller may see and act on a loaded config.
pub fn may_act_on(ctx: &RequestContext, handle: &ConfigHandle) -> bool {
    crate::registry::may_act(&ctx.caller, handle.owner_uid())
}
