//! `kepler recreate`: bake the config again; refused while anything runs.

use kepler_protocol::{ConfigRef, ErrorKind, Response, SysEnv};

use super::config_access::config_and_file;
use super::RequestContext;
use crate::config_actor::ActorError;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    sys_env: SysEnv,
) -> Result<Response, ActorError> {
    let (handle, file) = config_and_file(ctx, &config, &sys_env).await?;
    ctx.daemon
        .runs()
        .refuse_if_held(handle.path(), "recreate")?;
    // The bake captures the caller's environment as the config's system
    // environment and runs with the caller's rights: only the owner of the
    // file may do that (root's environment must not end up in a member's
    // config, nor a member's in root's).
    if file.owner_uid != ctx.caller.uid {
        return Err(ActorError::new(
            ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}; only its owner may recreate it, since recreate bakes the \
                 caller's environment into the config",
                file.path.display(),
                file.owner_uid
            ),
        ));
    }
    if handle.owner_uid() != file.owner_uid {
        return Err(ActorError::new(
            ErrorKind::Conflict,
            format!(
                "{} was loaded when it belonged to uid {}; it now belongs to uid {}, so its state \
                 must go first: stop it and run `sudo kepler prune`",
                file.path.display(),
                handle.owner_uid(),
                file.owner_uid
            ),
        ));
    }
    handle
        .recreate(
            crate::registry::rights_of(&ctx.caller),
            sys_env,
            file.source,
        )
        .await?;
    Ok(Response::Done)
}
