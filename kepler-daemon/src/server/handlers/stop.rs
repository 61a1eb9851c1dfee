//! `kepler stop`: answers once the services are down.

use kepler_protocol::{ConfigRef, Response};

use super::config_access::config_for;
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
    let handle = config_for(ctx, &config).await?;
    let request = StopIntentRequest {
        signal,
        intent: StopIntent::User,
    };
    modes::stop_config(&handle, services, request, clean).await?;
    Ok(Response::Done)
}
