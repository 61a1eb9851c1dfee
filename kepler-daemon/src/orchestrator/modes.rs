//! How long a start or restart keeps its client: `-d` returns at once,
//! `-d --wait` until the startup cluster is ready, attached until every
//! service has settled, streaming output meanwhile. All three react to the
//! config's broadcasts; nothing polls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kepler_protocol::{ErrorKind, Event, ServiceStatus};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio::sync::mpsc;

use super::{StartPlan, StopIntentRequest};
use crate::config::{BakedConfig, GlobalHookKind};
use crate::config_actor::ActorError;
use crate::config_actor::ConfigHandle;
use crate::events::StateChange;
use crate::logs::{FollowEvent, Follower};

/// Subscriptions taken before the request is sent to the actor, so no event
/// of the request can be missed.
pub struct Subscriptions {
    pub states: broadcast::Receiver<StateChange>,
    /// The config's output; attached mode only.
    pub logs: Option<Follower>,
    /// Kepler's notes about the request (why a run stops its services),
    /// shown among the output.
    pub notes: Option<mpsc::UnboundedReceiver<String>>,
}

/// Waits until every startup-cluster service of the plan is ready: up (or
/// healthy when it has a healthcheck) or completed with code 0. Fails naming
/// the first one that fails, or when `timeout` passes. `progress` sees
/// where each of those services stands and then every change of theirs
/// (live progress of `--wait`); it returns false once nobody listens.
pub async fn wait_for_startup<F, Fut>(
    mut states: broadcast::Receiver<StateChange>,
    plan: StartPlan,
    timeout: Option<Duration>,
    mut progress: F,
) -> Result<(), ActorError>
where
    F: FnMut(&StateChange) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let needs_health: HashMap<String, bool> = plan.startup.into_iter().collect();
    let mut pending: HashSet<String> = needs_health.keys().cloned().collect();
    let mut listening = true;
    let judge = |change: &StateChange, pending: &mut HashSet<String>| -> Result<(), ActorError> {
        let Some(&healthy) = needs_health.get(&*change.service) else {
            return Ok(());
        };
        let ready = match change.status {
            ServiceStatus::Healthy => true,
            ServiceStatus::Running | ServiceStatus::Unhealthy => !healthy,
            ServiceStatus::Exited(0) => true,
            _ => false,
        };
        let failed = match change.status {
            ServiceStatus::Failed => true,
            ServiceStatus::Exited(code) => code != 0,
            ServiceStatus::Stopped => change.settled,
            _ => false,
        };
        if ready {
            pending.remove(&*change.service);
        } else if failed {
            let why = change
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            return Err(ActorError::new(
                ErrorKind::Failed,
                format!(
                    "service `{}` {} during startup{why}",
                    change.service,
                    change.status.name()
                ),
            ));
        } else {
            pending.insert(change.service.to_string());
        }
        Ok(())
    };
    // Events already queued are older than the plan; replaying them in
    // order ends at the plan's state, so they are judged after it. Progress
    // shows them first, in order, then the plan's view of the services
    // that had none.
    let mut queued = Vec::new();
    loop {
        match states.try_recv() {
            Ok(change) => queued.push(change),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    let changed: HashSet<Arc<str>> = queued.iter().map(|c| c.service.clone()).collect();
    let unchanged = plan.views.iter().filter(|v| !changed.contains(&v.service));
    for change in queued.iter().chain(unchanged) {
        if listening && needs_health.contains_key(&*change.service) {
            listening = progress(change).await;
        }
    }
    for change in plan.views.iter().chain(&queued) {
        judge(change, &mut pending)?;
    }
    let wait = async {
        // Only judged as done once caught up with what is queued.
        loop {
            if pending.is_empty() && states.is_empty() {
                return Ok(());
            }
            match states.recv().await {
                Ok(change) => {
                    if listening && needs_health.contains_key(&*change.service) {
                        listening = progress(&change).await;
                    }
                    judge(&change, &mut pending)?
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    return Err(ActorError::new(
                        ErrorKind::Failed,
                        "the config was unloaded while waiting",
                    ))
                }
            }
        }
    };
    match timeout {
        None => wait.await,
        Some(limit) => match tokio::time::timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => Err(ActorError::new(
                ErrorKind::Failed,
                format!(
                    "timed out after {limit:?} waiting for startup; not ready: {}",
                    {
                        let mut names: Vec<&String> = pending.iter().collect();
                        names.sort();
                        names
                            .iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            )),
        },
    }
}

/// Streams output and state changes through `emit` until every service of
/// the config is quiescent. Returns early (Ok) if `emit` reports the client
/// has gone. Output and state changes are merged by time; a service's
/// output is stored before its exit is recorded, so its last lines always
/// come before the line saying it exited. Lines of services with
/// `logs.timestamp` are marked to be shown with their time.
pub async fn follow_until_quiescent<F, Fut>(
    subscriptions: Subscriptions,
    plan: StartPlan,
    config: &BakedConfig,
    mut emit: F,
) -> Result<(), ActorError>
where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Subscriptions {
        mut states,
        logs,
        mut notes,
    } = subscriptions;
    let mut logs = logs.expect("attached mode follows the logs");
    let mut busy: HashSet<Arc<str>> = plan
        .views
        .iter()
        .filter(|v| !v.quiescent)
        .map(|v| v.service.clone())
        .collect();
    // A two-way merge by time: one item held back from each source, the
    // older one goes first.
    let mut held_log: Option<FollowEvent> = None;
    let mut held_state: Option<Result<StateChange, RecvError>> = None;
    loop {
        // Notes are about now: they go out as soon as they come.
        if let Some(note) = notes.as_mut().and_then(|n| n.try_recv().ok()) {
            if !emit(Event::Progress { message: note }).await {
                return Ok(());
            }
            continue;
        }
        if held_log.is_none() {
            held_log = logs.next().now_or_never().flatten();
        }
        if held_state.is_none() {
            held_state = match states.try_recv() {
                Ok(change) => Some(Ok(change)),
                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => None,
            };
        }
        if held_log.is_none() && held_state.is_none() {
            if busy.is_empty() {
                return Ok(());
            }
            tokio::select! {
                Some(line) = logs.next() => held_log = Some(line),
                change = states.recv() => held_state = Some(change),
                Some(note) = next_note(&mut notes) => {
                    if !emit(Event::Progress { message: note }).await {
                        return Ok(());
                    }
                }
            }
            continue;
        }
        let log_first = match (&held_log, &held_state) {
            (Some(FollowEvent::Line(line)), Some(Ok(change))) => line.timestamp_us <= change.at_us,
            (Some(_), _) => true,
            (None, _) => false,
        };
        let event = if log_first {
            match held_log.take().expect("held") {
                FollowEvent::Line(line) => {
                    let show_time = config.log_config(&line.service).timestamp;
                    let replica = config.replica_of(&line.service);
                    Event::Log(line.into_wire(show_time, replica))
                }
                FollowEvent::Missed(missed) => Event::Progress {
                    message: format!(
                        "(output too fast: {missed} lines not shown; `kepler logs` has them)"
                    ),
                },
            }
        } else {
            match held_state.take().expect("held") {
                Ok(change) => {
                    if change.quiescent {
                        busy.remove(&change.service);
                    } else {
                        busy.insert(change.service.clone());
                    }
                    Event::ServiceState {
                        service: change.service.to_string(),
                        status: change.status,
                        reason: change.reason,
                    }
                }
                Err(RecvError::Lagged(missed)) => Event::Progress {
                    message: format!(
                        "({missed} state changes not shown; `kepler ps` has the current state)"
                    ),
                },
                Err(RecvError::Closed) => return Ok(()),
            }
        };
        if !emit(event).await {
            return Ok(());
        }
    }
}

/// The next note, or never when there are none to come.
async fn next_note(notes: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match notes {
        Some(notes) => notes.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether any service of the config has a process or is on its way to one.
async fn anything_active(handle: &ConfigHandle) -> Result<bool, ActorError> {
    Ok(handle.ps().await?.iter().any(|s| {
        !matches!(
            s.status,
            ServiceStatus::Stopped | ServiceStatus::Exited(_) | ServiceStatus::Failed
        )
    }))
}

/// The global hooks around a stop: `pre_stop`, the stop itself, `post_stop`,
/// then `pre_cleanup` when asked. Used by `kepler stop` and by the daemon's
/// own shutdown, so both take the same path.
pub async fn stop_config(
    handle: &ConfigHandle,
    services: Vec<String>,
    request: StopIntentRequest,
    clean: bool,
) -> Result<(), ActorError> {
    let whole_config = services.is_empty();
    let hooks = whole_config && anything_active(handle).await?;
    if hooks {
        handle.global_hook(GlobalHookKind::PreStop).await?;
    }
    handle.stop(services, request).await?;
    if hooks {
        handle.global_hook(GlobalHookKind::PostStop).await?;
    }
    if clean {
        handle.global_hook(GlobalHookKind::PreCleanup).await?;
    }
    Ok(())
}

/// The global hooks before a start or restart: `on_init` the first time,
/// then `pre_start` (or `pre_restart`).
pub async fn before_start(handle: &ConfigHandle, restart: bool) -> Result<(), ActorError> {
    handle.global_hook(GlobalHookKind::OnInit).await?;
    let kind = if restart {
        GlobalHookKind::PreRestart
    } else {
        GlobalHookKind::PreStart
    };
    handle.global_hook(kind).await
}

/// Runs `post_start` (or `post_restart`) once the startup cluster is ready,
/// in the background, so `-d` returns at once.
pub fn after_start(
    handle: ConfigHandle,
    states: broadcast::Receiver<StateChange>,
    plan: StartPlan,
    restart: bool,
) {
    let kind = if restart {
        GlobalHookKind::PostRestart
    } else {
        GlobalHookKind::PostStart
    };
    tokio::spawn(async move {
        let quiet = |_: &StateChange| std::future::ready(true);
        if wait_for_startup(states, plan, None, quiet).await.is_ok() {
            if let Err(e) = handle.global_hook(kind).await {
                tracing::warn!(config = %handle.path().display(), "{e}");
            }
        }
    });
}
