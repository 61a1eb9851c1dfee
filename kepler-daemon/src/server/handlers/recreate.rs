//! `kepler recreate`: bake the config again; refused while anything runs.

use kepler_protocol::{ConfigRef, Response};

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;

pub async fn handle(ctx: &RequestContext, config: ConfigRef) -> Result<Response, ActorError> {
    let handle = config_for(ctx, &config).await?;
    handle
        .recreate((*ctx.caller).clone(), config.sys_env)
        .await?;
    Ok(Response::Done)
}
