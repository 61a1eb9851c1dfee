//! `kepler stop`: answers once the services are down. With `--clean`, the
//! whole config is undone: every service stopped, `pre_cleanup` run, then
//! its stored state removed and the config unloaded, so the next start
//! bakes it afresh and runs `on_init` again.

use kepler_protocol::{ConfigRef, ErrorKind, Response};

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
    if clean && !services.is_empty() {
        return Err(ActorError::new(
            ErrorKind::Failed,
            "--clean applies to the whole config: it stops every service, runs pre_cleanup and \
             removes the config's stored state; run `kepler stop --clean` without service names",
        ));
    }
    // Nothing to stop in a config that is not loaded; it is not baked for that.
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    if clean {
        // A run removes its state itself once its services have ended.
        ctx.daemon
            .runs()
            .refuse_if_held(handle.path(), "clean up")?;
    }
    let request = StopIntentRequest {
        signal,
        intent: StopIntent::User,
    };
    modes::stop_config(&handle, services, request, clean).await?;
    if clean {
        ctx.daemon.registry().forget(&handle).await?;
    }
    Ok(Response::Done)
}
