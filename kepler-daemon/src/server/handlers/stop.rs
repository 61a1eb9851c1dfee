//! `kepler stop`: answers once the services are down.

use kepler_protocol::{ConfigRef, Response};

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::orchestrator::StopIntentRequest;
use crate::state::StopIntent;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
    signal: Option<i32>,
) -> Result<Response, ActorError> {
    let handle = config_for(ctx, &config).await?;
    handle
        .stop(
            services,
            StopIntentRequest {
                signal,
                intent: StopIntent::User,
            },
        )
        .await?;
    Ok(Response::Done)
}
