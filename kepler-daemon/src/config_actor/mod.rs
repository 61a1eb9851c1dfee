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

use crate::config::BakedConfig;
use crate::events::ConfigEvents;
use crate::orchestrator::Orchestrator;
use crate::persistence::{ConfigState, ConfigStore};

/// Starts the actor for `config`. With `resume`, process groups left by a
/// previous daemon are killed first and the services that were up are
/// started again.
pub fn spawn(
    config: BakedConfig,
    store: ConfigStore,
    state: ConfigState,
    resume: bool,
) -> ConfigHandle {
    let path: PathBuf = config.config_file.clone();
    let events = ConfigEvents::new();
    let (commands, inbox) = mpsc::unbounded_channel();
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let owner_uid = state.owner_uid;
    let service_count = config.services.len();
    let orchestrator = Orchestrator::new(
        Arc::new(config),
        store.clone(),
        state.clone(),
        events.clone(),
        internal_tx,
    );
    tokio::spawn(actor::run(
        orchestrator,
        inbox,
        internal_rx,
        resume.then_some(state),
    ));
    ConfigHandle::new(path, store, events, commands, owner_uid, service_count)
}
