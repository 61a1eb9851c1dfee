//! `kepler scale SERVICE=N ...`: new instance counts, answered once new
//! instances run (or one failed, naming why) and surplus ones are down.

use std::time::Duration;

use kepler_protocol::{ConfigRef, ErrorKind, Response};

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::orchestrator::ScaleRequest;

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
    let requests = services
        .into_iter()
        .map(|(service, count)| ScaleRequest { service, count })
        .collect();
    let plan = handle.scale(requests).await?;
    let unloaded = || {
        ActorError::new(
            ErrorKind::Failed,
            "the config was unloaded while it was being scaled",
        )
    };
    let running = async {
        match plan.running.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(ActorError::new(
                ErrorKind::Failed,
                format!("{why} (the new count is kept; `kepler ps` shows every instance)"),
            )),
            Err(_) => Err(unloaded()),
        }
    };
    let stopped = async { plan.stopped.await.map_err(|_| unloaded()) };
    let both = async {
        let (running, stopped) = tokio::join!(running, stopped);
        running.and(stopped)
    };
    match timeout_ms.map(Duration::from_millis) {
        None => both.await?,
        Some(limit) => match tokio::time::timeout(limit, both).await {
            Ok(result) => result?,
            Err(_) => return Err(timed_out(&handle, limit, &plan.started).await),
        },
    }
    Ok(Response::Scaled(plan.changes))
}

/// The timeout's message: which new instances do not run yet, and why.
async fn timed_out(handle: &ConfigHandle, limit: Duration, started: &[String]) -> ActorError {
    let waiting: Vec<String> = handle
        .ps()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|s| started.contains(&s.name) && !s.status.is_up())
        .map(|s| match s.reason {
            Some(reason) => format!("`{}` ({reason})", s.name),
            None => format!("`{}` ({})", s.name, s.status.name()),
        })
        .collect();
    let which = if waiting.is_empty() {
        "surplus instances are still stopping".to_owned()
    } else {
        format!("not running yet: {}", waiting.join(", "))
    };
    ActorError::new(
        ErrorKind::Failed,
        format!("timed out after {limit:?} waiting for the scale; {which} (the new count is kept)"),
    )
}
