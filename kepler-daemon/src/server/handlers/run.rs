//! `kepler run`: an ephemeral run. The config is baked afresh from its
//! file, started as `kepler start` would in the same mode, and handed to a
//! supervisor ([`crate::run`]) that ends the run and removes its state.
//! Attached, the answer is the run's exit code.

use kepler_protocol::{ConfigRef, ErrorKind, Response, RunOptions, StartMode, SysEnv};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::config_access::{config_for, loaded_config};
use super::start::wait_showing_progress;
use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::config_identity::identify;
use crate::events::StateChange;
use crate::orchestrator::modes::{self, Subscriptions};
use crate::orchestrator::StartPlan;
use crate::run::{self, RunOutcome, Supervision};

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    sys_env: SysEnv,
    services: Vec<String>,
    mode: StartMode,
    options: RunOptions,
) -> Result<Response, ActorError> {
    let attached = matches!(mode, StartMode::Attached);
    // Dropped when this request ends or is cancelled (the client went away),
    // which ends an attached run.
    let (_client_present, client_gone) = oneshot::channel::<()>();
    // Set up in a task of its own: a client that goes away cancels this
    // request, and a run cancelled half-way would leave services without
    // a supervisor.
    let setup = tokio::spawn(set_up(
        ctx.detached(),
        config,
        sys_env,
        services,
        mode,
        options,
        attached.then_some(client_gone),
    ));
    let Running {
        handle,
        subscriptions,
        plan,
        outcome,
    } = setup.await.map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!("setting up the run crashed: {e}"),
        )
    })??;
    match mode {
        StartMode::Detached => Ok(Response::Done),
        StartMode::Wait { timeout_ms } => {
            wait_showing_progress(ctx, subscriptions.states, plan, timeout_ms).await
        }
        StartMode::Attached => {
            let config = handle.config();
            modes::follow_until_quiescent(subscriptions, plan, &config, |event| ctx.emit(event))
                .await?;
            let outcome = outcome.await.map_err(|_| {
                ActorError::new(ErrorKind::Failed, "the run's supervisor ended unexpectedly")
            })?;
            Ok(Response::RunEnded {
                exit_code: outcome.exit_code,
                cause: outcome.cause,
                cleanup_error: outcome.cleanup_error,
            })
        }
    }
}

/// A run under way, for the request to follow.
struct Running {
    handle: ConfigHandle,
    subscriptions: Subscriptions,
    plan: StartPlan,
    outcome: oneshot::Receiver<RunOutcome>,
}

/// Claims the config, bakes it, starts it and hands it to a supervisor.
async fn set_up(
    ctx: RequestContext,
    config: ConfigRef,
    sys_env: SysEnv,
    services: Vec<String>,
    mode: StartMode,
    options: RunOptions,
    client: Option<oneshot::Receiver<()>>,
) -> Result<Running, ActorError> {
    // Held by the config's one name, whatever path the request gave.
    let file = identify(&ctx.caller, &config.path).await?;
    let lease = ctx.daemon.runs().claim(&file.path, ctx.caller.pid)?;
    let handle = fresh_config(&ctx, &config, sys_env).await?;
    let Begun {
        mut subscriptions,
        supervisor_states,
        plan,
    } = match begin(&handle, services, mode, &options).await {
        Ok(begun) => begun,
        Err(e) => {
            // Nothing runs: the run is over before it began.
            if !options.keep_state {
                if let Err(cleanup) = run::end_run(ctx.daemon.registry(), &handle).await {
                    tracing::warn!(config = %config.path.display(), "run: {cleanup}");
                }
            }
            return Err(e);
        }
    };
    let (notes, notes_received) = mpsc::unbounded_channel();
    let attached = client.is_some();
    subscriptions.notes = attached.then_some(notes_received);
    let outcome = run::supervise(Supervision {
        daemon: ctx.daemon.clone(),
        handle: handle.clone(),
        lease,
        states: supervisor_states,
        views: plan.views.clone(),
        options,
        client,
        notes: attached.then_some(notes),
    });
    Ok(Running {
        handle,
        subscriptions,
        plan,
        outcome,
    })
}

/// The config baked from its file now. One loaded before (started, or
/// kept by an earlier run) is let go first, state and all, so the run starts
/// afresh like the first load of a config; that needs every service of it
/// stopped.
async fn fresh_config(
    ctx: &RequestContext,
    config: &ConfigRef,
    sys_env: SysEnv,
) -> Result<ConfigHandle, ActorError> {
    if let Some(previous) = loaded_config(ctx, config).await? {
        ctx.daemon
            .registry()
            .forget(&previous)
            .await
            .map_err(|e| match e.kind {
                ErrorKind::Conflict => ActorError::new(
                    ErrorKind::Conflict,
                    format!(
                        "cannot run {}: services of it started with `kepler start` are still \
                         running or starting; stop them first with `kepler stop`",
                        config.path.display()
                    ),
                ),
                _ => e,
            })?;
    }
    config_for(ctx, config, &sys_env).await
}

/// A run's services on their way up, and the subscriptions taken before.
struct Begun {
    subscriptions: Subscriptions,
    supervisor_states: broadcast::Receiver<StateChange>,
    plan: StartPlan,
}

/// Global hooks, subscriptions and the start itself, as `kepler start`.
async fn begin(
    handle: &ConfigHandle,
    mut services: Vec<String>,
    mode: StartMode,
    options: &RunOptions,
) -> Result<Begun, ActorError> {
    if let Some(from) = &options.exit_code_from {
        check_service(handle, from).await?;
        // The service whose code the run takes must run.
        if !services.is_empty() && !services.contains(from) {
            services.push(from.clone());
        }
    }
    modes::before_start(handle, false).await?;
    let states = handle.events().states.clone();
    let subscriptions = Subscriptions {
        states: states.subscribe(),
        logs: matches!(mode, StartMode::Attached).then(|| handle.logs().subscribe(&[], true)),
        notes: None,
    };
    let supervisor_states = states.subscribe();
    let hooks_states = states.subscribe();
    let plan = handle.start(services).await?;
    modes::after_start(handle.clone(), hooks_states, plan.clone(), false);
    Ok(Begun {
        subscriptions,
        supervisor_states,
        plan,
    })
}

async fn check_service(handle: &ConfigHandle, name: &str) -> Result<(), ActorError> {
    let known: Vec<String> = handle.ps().await?.into_iter().map(|s| s.name).collect();
    if known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(ActorError::new(
        ErrorKind::NotFound,
        format!(
            "--exit-code-from names no service of {}: `{name}`; its services are: {}",
            handle.path().display(),
            known.join(", ")
        ),
    ))
}
