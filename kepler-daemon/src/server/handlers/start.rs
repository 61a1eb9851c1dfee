//! `kepler start` and `kepler restart`, in all three modes.

use std::time::Duration;

use kepler_protocol::{ConfigRef, Event, Response, StartMode, SysEnv, WaitedService};
use tokio::sync::broadcast;

use super::config_access::config_for;
use super::RequestContext;
use crate::config_actor::ActorError;
use crate::events::StateChange;
use crate::orchestrator::modes::{self, Subscriptions};
use crate::orchestrator::StartPlan;

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
    let verb_name = match verb {
        Verb::Start => "start",
        Verb::Restart => "restart",
    };
    let handle = config_for(ctx, &config, &sys_env).await?;
    // By the config's one name, whatever path the request gave.
    ctx.daemon.runs().refuse_if_held(handle.path(), verb_name)?;
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
        notes: None,
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
            return wait_showing_progress(ctx, subscriptions.states, plan, timeout_ms).await;
        }
        StartMode::Attached => {
            let config = handle.config();
            modes::follow_until_quiescent(subscriptions, plan, &config, |event| ctx.emit(event))
                .await?
        }
    }
    Ok(Response::Done)
}

/// `-d --wait`: waits for the startup cluster, telling the client which
/// services it waits for and every change of theirs, so it can show live
/// progress. Answers which services are ready and which were deferred.
pub async fn wait_showing_progress(
    ctx: &RequestContext,
    states: broadcast::Receiver<StateChange>,
    plan: StartPlan,
    timeout_ms: Option<u64>,
) -> Result<Response, ActorError> {
    let (ready, deferred) = (plan.ready.clone(), plan.deferred.clone());
    let waited = plan
        .startup
        .iter()
        .map(|(name, healthcheck)| WaitedService {
            name: name.clone(),
            healthcheck: *healthcheck,
        })
        .collect();
    ctx.emit(Event::StartupPlan { services: waited }).await;
    let progress = |change: &StateChange| {
        ctx.emit(Event::ServiceState {
            service: change.service.to_string(),
            status: change.status,
            reason: change.reason.clone(),
        })
    };
    modes::wait_for_startup(
        states,
        plan,
        timeout_ms.map(Duration::from_millis),
        progress,
    )
    .await?;
    Ok(Response::Started { ready, deferred })
}
