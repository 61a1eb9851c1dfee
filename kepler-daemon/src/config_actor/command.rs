//! Messages a [`super::ConfigHandle`] sends to its actor.

use std::collections::BTreeMap;

use kepler_protocol::{ErrorKind, ServiceInfo};
use tokio::sync::oneshot;

use crate::orchestrator::{ScalePlan, ScaleRequest, StartPlan, StopIntentRequest};
use crate::upgrade::format::ConfigHandover;

/// A failed command, worded for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ActorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActorError {
            kind,
            message: message.into(),
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, ActorError>>;

pub enum Command {
    Start {
        services: Vec<String>,
        reply: Reply<StartPlan>,
    },
    Stop {
        services: Vec<String>,
        request: StopIntentRequest,
        reply: Reply<oneshot::Receiver<()>>,
    },
    Restart {
        services: Vec<String>,
        reply: Reply<StartPlan>,
    },
    Ps {
        /// Sample CPU and memory of the running services too.
        usage: bool,
        reply: oneshot::Sender<Vec<ServiceInfo>>,
    },
    /// Every service's state now, as state changes (`kepler run` after it
    /// fell behind the broadcast).
    Views {
        reply: oneshot::Sender<Vec<crate::events::StateChange>>,
    },
    /// Service states with the usage of the last sampling tick, and what
    /// `inspect` shows of each service's runtime.
    Observe {
        reply: oneshot::Sender<crate::orchestrator::Observation>,
    },
    /// Running and total counts and limit notes, for `daemon status` and
    /// `prune`.
    Summary {
        reply: oneshot::Sender<super::ConfigSummaryInfo>,
    },
    /// Bakes again as `who` (the config's owner) with `sys_env`, from the
    /// file now known as `source`.
    Recreate {
        who: crate::unprivileged_bake::BakeAs,
        sys_env: BTreeMap<String, String>,
        source: crate::persistence::SourceId,
        reply: Reply<()>,
    },
    /// Runs a global hook; answers when it has finished.
    GlobalHook {
        kind: crate::config::GlobalHookKind,
        reply: Reply<()>,
    },
    /// Ends the actor (after prune); nothing may be running.
    Close,
    /// Ends the actor if nothing is active, answering once it has written
    /// its last state and let go of everything it held (`stop --clean`).
    Unload { reply: Reply<()> },
    /// Changes the instance counts of replicated services.
    Scale {
        requests: Vec<ScaleRequest>,
        reply: Reply<ScalePlan>,
    },
    /// An upgrade's hand-over: answers this config's state, or why it
    /// cannot be handed over now; then waits for `go`. With a sender, the
    /// actor lets go of its pipes, answers its full state there and stops
    /// handling anything (the process is about to be replaced); without,
    /// it carries on.
    Handover {
        reply: oneshot::Sender<Result<ConfigHandover, String>>,
        go: oneshot::Receiver<Option<oneshot::Sender<ConfigHandover>>>,
    },
}
