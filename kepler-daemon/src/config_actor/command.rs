//! Messages a [`super::ConfigHandle`] sends to its actor.

use std::collections::BTreeMap;

use kepler_protocol::{ErrorKind, ServiceInfo};
use tokio::sync::oneshot;

use crate::orchestrator::{StartPlan, StopIntentRequest};

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
    /// Running and total counts and limit notes, for `daemon status` and
    /// `prune`.
    Summary {
        reply: oneshot::Sender<super::ConfigSummaryInfo>,
    },
    Recreate {
        caller: crate::server::Caller,
        sys_env: BTreeMap<String, String>,
        reply: Reply<()>,
    },
    /// Runs a global hook; answers when it has finished.
    GlobalHook {
        kind: crate::config::GlobalHookKind,
        reply: Reply<()>,
    },
    /// Ends the actor (after prune); nothing may be running.
    Close,
}
