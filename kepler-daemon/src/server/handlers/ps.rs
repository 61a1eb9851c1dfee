//! `kepler ps [--all]`.

use kepler_protocol::{ConfigRef, ConfigServices, Response};

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
        configs.push(ConfigServices {
            path: handle.path().to_path_buf(),
            services: handle.ps_with_usage().await?,
        });
    }
    Ok(Response::Ps(configs))
}
