//! `kepler scale SERVICE=N ...`: new instance counts, answered once new
//! instances run (or failed, naming why) and surplus ones are down.

use std::time::Duration;

use kepler_protocol::{ConfigRef, ErrorKind, Response};

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::orchestrator::{modes, ScaleRequest};

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<(String, u32)>,
    timeout_ms: Option<u64>,
) -> Result<Response, ActorError> {
    if services.is_empty() {
        return Err(ActorError::new(
            ErrorKind::Failed,
            "name at least one SERVICE=COUNT, e.g. `kepler scale web=4`",
        ));
    }
    // A config that is not loaded runs nothing to scale; it is not baked for that.
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    // Subscribe before acting, so no start of a new instance is missed.
    let states = handle.events().states.subscribe();
    let requests = services
        .into_iter()
        .map(|(service, count)| ScaleRequest { service, count })
        .collect();
    let plan = handle.scale(requests).await?;
    let limit = timeout_ms.map(Duration::from_millis);
    let started = modes::wait_for_startup(states, plan.started, limit);
    let stopped = async {
        plan.stopped.await.map_err(|_| {
            ActorError::new(
                ErrorKind::Failed,
                "the config was unloaded while its instances stopped",
            )
        })
    };
    let (started, stopped) = tokio::join!(started, stopped);
    started.map_err(|e| {
        ActorError::new(
            e.kind,
            format!("{e} (the new count is kept; `kepler ps` shows where each instance stands)"),
        )
    })?;
    stopped?;
    Ok(Response::Scaled(plan.changes))
}
