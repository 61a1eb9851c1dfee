//! The cloneable way in to a config actor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kepler_protocol::{ErrorKind, ServiceInfo};
use tokio::sync::{mpsc, oneshot};

use super::command::{ActorError, Command, Reply};
use crate::events::ConfigEvents;
use crate::logs::LogStore;
use crate::orchestrator::{ScalePlan, ScaleRequest, StartPlan, StopIntentRequest};
use crate::persistence::{ConfigStore, SourceId};

#[derive(Clone)]
pub struct ConfigHandle {
    path: PathBuf,
    store: ConfigStore,
    events: ConfigEvents,
    logs: LogStore,
    commands: mpsc::UnboundedSender<Command>,
    owner_uid: u32,
    /// Updated by `recreate`, which may read a new file at the same path.
    source: Arc<Mutex<SourceId>>,
    service_count: usize,
}

pub struct ConfigSummaryInfo {
    pub running: usize,
    pub services: usize,
    /// Limits not enforced as configured (see `Orchestrator::limit_notes`).
    pub limit_notes: Vec<String>,
}

impl ConfigHandle {
    pub(super) fn new(
        path: PathBuf,
        store: ConfigStore,
        events: ConfigEvents,
        logs: LogStore,
        commands: mpsc::UnboundedSender<Command>,
        service_count: usize,
    ) -> Self {
        ConfigHandle {
            path,
            store,
            events,
            logs,
            commands,
            owner_uid: 0,
            source: Arc::new(Mutex::new(SourceId::default())),
            service_count,
        }
    }

    /// Whose config it is and which file it came from (from its snapshot).
    pub(super) fn owned_by(mut self, owner_uid: u32, source: SourceId) -> Self {
        self.owner_uid = owner_uid;
        self.source = Arc::new(Mutex::new(source));
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    pub fn events(&self) -> &ConfigEvents {
        &self.events
    }

    /// The snapshot the config runs now.
    pub fn config(&self) -> std::sync::Arc<crate::config::BakedConfig> {
        self.events.config()
    }

    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    /// Runs a global hook (`on_init` at most once per bake).
    pub async fn global_hook(&self, kind: crate::config::GlobalHookKind) -> Result<(), ActorError> {
        self.ask(|reply| Command::GlobalHook { kind, reply }).await
    }

    /// The uid that owned the config file when it was baked: whose config
    /// this is.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The file it was baked from.
    pub fn source(&self) -> SourceId {
        *self.source.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `other` is a handle on the same actor.
    pub fn is_same(&self, other: &ConfigHandle) -> bool {
        self.commands.same_channel(&other.commands)
    }

    pub fn service_count(&self) -> usize {
        self.service_count
    }

    /// False once the actor has ended (closed or crashed).
    pub fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }

    fn unavailable(&self) -> ActorError {
        ActorError::new(
            ErrorKind::Failed,
            format!(
                "the config {} is unavailable (its actor stopped unexpectedly; see the daemon \
                 log); retry to reload it",
                self.path.display()
            ),
        )
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ActorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())?
    }

    pub async fn start(&self, services: Vec<String>) -> Result<StartPlan, ActorError> {
        self.ask(|reply| Command::Start { services, reply }).await
    }

    /// Resolves once the services are down.
    pub async fn stop(
        &self,
        services: Vec<String>,
        request: StopIntentRequest,
    ) -> Result<(), ActorError> {
        let finished = self
            .ask(|reply| Command::Stop {
                services,
                request,
                reply,
            })
            .await?;
        finished.await.map_err(|_| self.unavailable())
    }

    /// Applies new instance counts; the plan says what to wait for.
    pub async fn scale(&self, requests: Vec<ScaleRequest>) -> Result<ScalePlan, ActorError> {
        self.ask(|reply| Command::Scale { requests, reply }).await
    }

    pub async fn restart(&self, services: Vec<String>) -> Result<StartPlan, ActorError> {
        self.ask(|reply| Command::Restart { services, reply }).await
    }

    /// Service states, in name order.
    pub async fn ps(&self) -> Result<Vec<ServiceInfo>, ActorError> {
        self.service_infos(false).await
    }

    /// [`Self::ps`] with what the running services use now (CPU and
    /// memory, sampled for this answer), for `kepler ps`.
    pub async fn ps_with_usage(&self) -> Result<Vec<ServiceInfo>, ActorError> {
        self.service_infos(true).await
    }

    async fn service_infos(&self, usage: bool) -> Result<Vec<ServiceInfo>, ActorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ps { usage, reply })
            .map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())
    }

    /// Every service's state now, as state changes.
    pub async fn views(&self) -> Result<Vec<crate::events::StateChange>, ActorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Views { reply })
            .map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())
    }

    /// Every service's state with the last sampling tick's usage, and what
    /// `inspect` shows of its runtime.
    pub async fn observe(&self) -> Result<crate::orchestrator::Observation, ActorError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Observe { reply })
            .map_err(|_| self.unavailable())?;
        answer.await.map_err(|_| self.unavailable())
    }

    /// Running and total service counts and limit notes; `None` if the
    /// actor does not answer within a second (status must never hang on
    /// one busy config).
    pub async fn summary(&self) -> Option<ConfigSummaryInfo> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Summary { reply }).ok()?;
        tokio::time::timeout(Duration::from_secs(1), answer)
            .await
            .ok()?
            .ok()
    }

    pub async fn recreate(
        &self,
        who: crate::unprivileged_bake::BakeAs,
        sys_env: std::collections::BTreeMap<String, String>,
        source: SourceId,
    ) -> Result<(), ActorError> {
        self.ask(|reply| Command::Recreate {
            who,
            sys_env,
            source,
            reply,
        })
        .await?;
        *self.source.lock().unwrap_or_else(PoisonError::into_inner) = source;
        Ok(())
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// Asks the actor to prepare its hand-over (see `Command::Handover`);
    /// `None` when the actor has ended.
    pub fn handover(
        &self,
        go: tokio::sync::oneshot::Receiver<
            Option<tokio::sync::oneshot::Sender<crate::upgrade::format::ConfigHandover>>,
        >,
    ) -> Option<
        tokio::sync::oneshot::Receiver<Result<crate::upgrade::format::ConfigHandover, String>>,
    > {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands.send(Command::Handover { reply, go }).ok()?;
        Some(answer)
    }

    /// Ends the actor; refused while any service is running or starting.
    /// Answers once the actor is gone.
    pub async fn unload(&self) -> Result<(), ActorError> {
        self.ask(|reply| Command::Unload { reply }).await
    }

    /// Resolves once the actor has ended (after its last state write).
    pub async fn closed(&self) {
        self.commands.closed().await;
    }
}
