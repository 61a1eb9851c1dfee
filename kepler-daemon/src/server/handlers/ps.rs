//! `kepler ps [--all]`.

use kepler_protocol::{ConfigRef, ConfigServices, Response};

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;

pub async fn handle(
    ctx: &RequestContext,
    config: Option<ConfigRef>,
) -> Result<Response, ActorError> {
    let handles = match config {
        Some(config) => vec![config_for(ctx, &config).await?],
        // Non-root callers see only the configs they own.
        None => ctx
            .daemon
            .registry()
            .all()
            .into_iter()
            .filter(|h| ctx.caller.is_root() || h.owner_uid() == ctx.caller.uid)
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
