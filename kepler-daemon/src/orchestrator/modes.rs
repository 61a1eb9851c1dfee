//! How long a start or restart keeps its client: `-d` returns at once,
//! `-d --wait` until the startup cluster is ready, attached until every
//! service has settled, streaming output meanwhile. All three react to the
//! config's broadcasts; nothing polls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kepler_protocol::{ErrorKind, Event, ServiceStatus};
use tokio::sync::broadcast::{self, error::RecvError};

use super::StartPlan;
use crate::config_actor::ActorError;
use crate::events::{StateChange, StreamItem};

/// Subscriptions taken before the request is sent to the actor, so no event
/// of the request can be missed.
pub struct Subscriptions {
    pub states: broadcast::Receiver<StateChange>,
    /// Output and state changes in order; attached mode only.
    pub stream: Option<broadcast::Receiver<StreamItem>>,
}

/// Waits until every startup-cluster service of the plan is ready: up (or
/// healthy when it has a healthcheck) or completed with code 0. Fails naming
/// the first one that fails, or when `timeout` passes.
pub async fn wait_for_startup(
    mut states: broadcast::Receiver<StateChange>,
    plan: StartPlan,
    timeout: Option<Duration>,
) -> Result<(), ActorError> {
    let needs_health: HashMap<String, bool> = plan.startup.into_iter().collect();
    let mut pending: HashSet<String> = needs_health.keys().cloned().collect();
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
    for view in &plan.views {
        judge(view, &mut pending)?;
    }
    let wait = async {
        // Events already queued are older than the plan; replaying them in
        // order ends at the plan's state, so only judge once caught up.
        loop {
            if pending.is_empty() && states.is_empty() {
                return Ok(());
            }
            match states.recv().await {
                Ok(change) => judge(&change, &mut pending)?,
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
/// has gone.
pub async fn follow_until_quiescent<F, Fut>(
    subscriptions: Subscriptions,
    plan: StartPlan,
    mut emit: F,
) -> Result<(), ActorError>
where
    F: FnMut(Event) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut stream = subscriptions
        .stream
        .expect("attached mode subscribes to the stream");
    let mut busy: HashSet<Arc<str>> = plan
        .views
        .iter()
        .filter(|v| !v.quiescent)
        .map(|v| v.service.clone())
        .collect();
    loop {
        if busy.is_empty() && stream.is_empty() {
            return Ok(());
        }
        let event = match stream.recv().await {
            Ok(StreamItem::Log(line)) => Event::Log((*line).clone()),
            Ok(StreamItem::State(change)) => {
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
                    "(output too fast: {missed} lines or state changes not shown; `kepler logs` \
                     and `kepler ps` have them)"
                ),
            },
            Err(RecvError::Closed) => return Ok(()),
        };
        if !emit(event).await {
            return Ok(());
        }
    }
}
