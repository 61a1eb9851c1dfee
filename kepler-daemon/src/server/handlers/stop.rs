//! `kepler stop`: answers once the services are down.

use kepler_protocol::{ConfigRef, Response};

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::orchestrator::{modes, StopIntentRequest};
use crate::state::StopIntent;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
    signal: Option<i32>,
    clean: bool,
) -> Result<Response, ActorError> {
    // Nothing to stop in a config that is not loaded; it is not baked for that.
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    let request = StopIntentRequest {
        signal,
        intent: StopIntent::User,
    };
    modes::stop_config(&handle, services, request, clean).await?;
    Ok(Response::Done)
}
