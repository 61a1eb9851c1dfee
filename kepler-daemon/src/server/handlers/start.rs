//! `kepler start` and `kepler restart`, in all three modes.

use std::time::Duration;

use kepler_protocol::{ConfigRef, Response, StartMode, SysEnv};

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::orchestrator::modes::{self, Subscriptions};

#[derive(Clone, Copy)]
pub enum Verb {
    Start,
    Restart,
}

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    sys_env: SysEnv,
    services: Vec<String>,
    mode: StartMode,
    verb: Verb,
) -> Result<Response, ActorError> {
    let handle = config_for(ctx, &config, &sys_env).await?;
    // An attached start lasts as long as its services: keep nothing of the
    // caller's environment for that long.
    drop(sys_env);
    let restart = matches!(verb, Verb::Restart);
    // A failing global pre_start (or on_init) hook starts nothing.
    modes::before_start(&handle, restart).await?;
    // Subscribe before acting, so no event of this request is missed.
    let subscriptions = Subscriptions {
        states: handle.events().states.subscribe(),
        logs: matches!(mode, StartMode::Attached).then(|| handle.logs().subscribe(&[], true)),
    };
    let hooks_states = handle.events().states.subscribe();
    let plan = match verb {
        Verb::Start => handle.start(services).await?,
        Verb::Restart => handle.restart(services).await?,
    };
    modes::after_start(handle.clone(), hooks_states, plan.clone(), restart);
    match mode {
        StartMode::Detached => {}
        StartMode::Wait { timeout_ms } => {
            let (ready, deferred) = (plan.ready.clone(), plan.deferred.clone());
            modes::wait_for_startup(
                subscriptions.states,
                plan,
                timeout_ms.map(Duration::from_millis),
            )
            .await?;
            return Ok(Response::Started { ready, deferred });
        }
        StartMode::Attached => {
            let config = handle.config();
            modes::follow_until_quiescent(subscriptions, plan, &config, |event| ctx.emit(event))
                .await?
        }
    }
    Ok(Response::Done)
}
