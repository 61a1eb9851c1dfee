//! `kepler recreate`: bake the config again; refused while anything runs.

use kepler_protocol::{ConfigRef, ErrorKind, Response, SysEnv};

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    sys_env: SysEnv,
) -> Result<Response, ActorError> {
    ctx.daemon.runs().refuse_if_held(&config.path, "recreate")?;
    let handle = config_for(ctx, &config, &sys_env).await?;
    // The bake captures the caller's environment as the config's system
    // environment; someone else's (even root's) must not end up in it.
    if handle.owner_uid() != ctx.caller.uid {
        return Err(ActorError::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}; only its owner may recreate it, since recreate bakes the \
                 caller's environment into the config",
                handle.path().display(),
                handle.owner_uid()
            ),
        ));
    }
    handle.recreate((*ctx.caller).clone(), sys_env).await?;
    Ok(Response::Done)
}
