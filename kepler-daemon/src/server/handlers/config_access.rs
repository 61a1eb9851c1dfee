//! Finding the config a request is about, and whether the caller may touch it.

use kepler_protocol::{ConfigRef, ErrorKind};

use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::config_identity::{identify, ConfigIdentity};

/// The config's actor, loaded on first use, if the caller may act on it:
/// root on every config, anyone else only on configs whose file they own.
/// Everyone else hears "not found or not yours", whether or not the config
/// was ever loaded.
pub async fn config_for(
    ctx: &RequestContext,
    config: &ConfigRef,
) -> Result<ConfigHandle, ActorError> {
    taking_work(ctx)?;
    ctx.daemon.registry().get_or_load(config, &ctx.caller).await
}

/// [`config_for`], with the file the request names as the daemon finds it
/// now (resolved with the caller's rights).
pub async fn config_and_file(
    ctx: &RequestContext,
    config: &ConfigRef,
) -> Result<(ConfigHandle, ConfigIdentity), ActorError> {
    taking_work(ctx)?;
    let file = identify(&ctx.caller, &config.path).await?;
    let handle = ctx
        .daemon
        .registry()
        .get_or_load_file(&file, config, &ctx.caller)
        .await?;
    Ok((handle, file))
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
