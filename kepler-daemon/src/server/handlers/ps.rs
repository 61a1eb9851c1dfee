//! `kepler ps [--all]`.
//!
//! Services go out in parts of at most [`PS_PART_SERVICES`] (events), so a
//! config of ten thousand services is a stream of modest frames; the final
//! answer lists the configs (with no services of its own).

use kepler_protocol::{ConfigRef, ConfigServices, Event, Response, PS_PART_SERVICES};

use super::config_access::{loaded_config, may_act_on};
use super::RequestContext;
use crate::config_actor::ActorError;

pub async fn handle(
    ctx: &RequestContext,
    config: Option<ConfigRef>,
) -> Result<Response, ActorError> {
    let handles: Vec<_> = match config {
        // Like `docker compose ps` of a project never started: nothing.
        Some(config) => loaded_config(ctx, &config).await?.into_iter().collect(),
        // Non-root callers see only the configs they own.
        None => ctx
            .daemon
            .registry()
            .all()
            .into_iter()
            .filter(|h| may_act_on(ctx, h))
            .collect(),
    };
    let mut configs = Vec::with_capacity(handles.len());
    for handle in handles {
        let path = handle.path().to_path_buf();
        let mut services = handle.ps_with_usage().await?.into_iter();
        while services.len() > 0 {
            let part = ConfigServices {
                path: path.clone(),
                services: services.by_ref().take(PS_PART_SERVICES).collect(),
            };
            if !ctx.emit(Event::PsPart(part)).await {
                // The client has gone; nobody reads the answer either.
                return Ok(Response::Ps(Vec::new()));
            }
        }
        configs.push(ConfigServices {
            path,
            services: Vec::new(),
        });
    }
    Ok(Response::Ps(configs))
}
