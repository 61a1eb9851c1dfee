//! One actor per loaded config: a task that owns the config's baked snapshot
//! and its services' runtime state. Its [`ConfigHandle`] is the only way in.
//!
//! Commands arrive on one channel and are handled one at a time; after each
//! batch the state is persisted once. A panic inside one actor ends that
//! actor only: its handle reports the config as unavailable and the registry
//! drops it, while other configs and the daemon carry on.

mod actor;
mod command;
mod handle;

pub use command::ActorError;
pub use handle::{ConfigHandle, ConfigSummaryInfo};

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use kepler_protocol::ErrorKind;

use crate::config::BakedConfig;
use crate::events::ConfigEvents;
use crate::logs::LogStore;
use crate::orchestrator::{Channels, Orchestrator};
use crate::persistence::{ConfigState, ConfigStore};

/// Starts the actor for `config`. With `resume`, process groups left by a
/// previous daemon are killed first and the services that were up are
/// started again.
pub fn spawn(
    config: BakedConfig,
    store: ConfigStore,
    state: ConfigState,
    resume: bool,
) -> Result<ConfigHandle, ActorError> {
    let path: PathBuf = config.config_file.clone();
    let logs = LogStore::open(store.logs_dir()).map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!("cannot open the logs of {}: {e}", path.display()),
        )
    })?;
    let service_count = config.services.len();
    let events = ConfigEvents::for_services(service_count);
    let (commands, inbox) = mpsc::unbounded_channel();
    let (mailbox, internal) = mpsc::unbounded_channel();
    let (health, health_events) = mpsc::unbounded_channel();
    let (watch, watch_events) = mpsc::unbounded_channel();
    let owner_uid = state.owner_uid;
    let orchestrator = Orchestrator::new(
        Arc::new(config),
        store.clone(),
        state.clone(),
        events.clone(),
        logs.clone(),
        Channels {
            mailbox,
            health,
            watch,
        },
    );
    tokio::spawn(actor::run(
        orchestrator,
        actor::Inboxes {
            commands: inbox,
            internal,
            health: health_events,
            watch: watch_events,
        },
        resume.then_some(state),
    ));
    Ok(ConfigHandle::new(
        path,
        store,
        events,
        logs,
        commands,
        owner_uid,
        service_count,
    ))
}
