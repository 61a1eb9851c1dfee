//! The task that owns a run from its start to the removal of its state.

use std::collections::HashSet;
use std::sync::Arc;

use kepler_protocol::RunOptions;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, oneshot};

use super::{RunLease, Verdict};
use crate::config_actor::{ActorError, ConfigHandle};
use crate::events::StateChange;
use crate::orchestrator::{modes, StopIntentRequest};
use crate::registry::Registry;
use crate::state::StopIntent;

/// What a supervisor needs, taken before the run's services were started.
pub struct Supervision {
    pub daemon: Arc<crate::daemon::Daemon>,
    pub handle: ConfigHandle,
    pub lease: RunLease,
    /// Subscribed before the start, so every change of the run is in it.
    pub states: broadcast::Receiver<StateChange>,
    /// Every service's state when the start was handled.
    pub views: Vec<StateChange>,
    pub options: RunOptions,
    /// Attached runs: resolves (closed) once the client has gone, which
    /// ends the run like a Ctrl+C.
    pub client: Option<oneshot::Receiver<()>>,
    /// Why the run stops its services, for an attached client to print.
    pub notes: Option<mpsc::UnboundedSender<String>>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub exit_code: i32,
    /// Which service decided a non-zero code.
    pub cause: Option<String>,
    /// Why the config's state could not be removed, if it could not.
    pub cleanup_error: Option<String>,
}

/// Runs the supervisor in its own task (it outlives the request when the
/// client goes away) and returns where its outcome will arrive.
pub fn supervise(supervision: Supervision) -> oneshot::Receiver<RunOutcome> {
    let (reply, outcome) = oneshot::channel();
    tokio::spawn(async move {
        let _ = reply.send(run_to_the_end(supervision).await);
    });
    outcome
}

async fn run_to_the_end(supervision: Supervision) -> RunOutcome {
    let Supervision {
        daemon,
        handle,
        lease,
        mut states,
        views,
        options,
        mut client,
        notes,
    } = supervision;
    let note = |text: String| {
        tracing::info!(config = %handle.path().display(), "run: {text}");
        if let Some(notes) = &notes {
            let _ = notes.send(text);
        }
    };
    let mut verdict = Verdict::new(options.clone());
    let mut busy: HashSet<Arc<str>> = views
        .iter()
        .filter(|v| !v.quiescent)
        .map(|v| v.service.clone())
        .collect();
    let mut stopping = false;
    let mut stop_all = |why: String| {
        if std::mem::replace(&mut stopping, true) {
            return;
        }
        note(why);
        let handle = handle.clone();
        tokio::spawn(async move {
            let request = StopIntentRequest {
                signal: None,
                intent: StopIntent::User,
            };
            if let Err(e) = modes::stop_config(&handle, Vec::new(), request, false).await {
                tracing::warn!(config = %handle.path().display(), "run: stopping failed: {e}");
            }
        });
    };
    // Changes queued before the start's answer replay in order and end at
    // the views' state, so the run is over only once caught up.
    while !(busy.is_empty() && states.is_empty()) {
        tokio::select! {
            change = states.recv() => match change {
                Ok(change) => {
                    if change.quiescent {
                        busy.remove(&change.service);
                    } else {
                        busy.insert(change.service.clone());
                    }
                    if let Some(why) = verdict.observe(&change) {
                        stop_all(why);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Start again from where every service stands now.
                    let Ok(now) = handle.views().await else { break };
                    busy = now.iter().filter(|v| !v.quiescent).map(|v| v.service.clone()).collect();
                    for view in &now {
                        if let Some(why) = verdict.observe(view) {
                            stop_all(why);
                        }
                    }
                }
                Err(RecvError::Closed) => break,
            },
            _ = async { client.as_mut().expect("guarded").await }, if client.is_some() => {
                client = None;
                stop_all("the client of the run went away; stopping every service".into());
            }
        }
    }
    let (exit_code, cause) = verdict.exit();
    let cleanup_error = if options.keep_state {
        None
    } else {
        end_run(daemon.registry(), &handle).await.err().map(|e| {
            note(format!("the config's state was kept: {e}"));
            e.message
        })
    };
    drop(lease);
    RunOutcome {
        exit_code,
        cause,
        cleanup_error,
    }
}

/// Removes a run's config the way `stop --clean` does: `pre_cleanup`, then
/// the stored state, and the config is unloaded.
pub async fn end_run(registry: &Registry, handle: &ConfigHandle) -> Result<(), ActorError> {
    let request = StopIntentRequest {
        signal: None,
        intent: StopIntent::User,
    };
    modes::stop_config(handle, Vec::new(), request, true).await?;
    registry.forget(handle).await
}
