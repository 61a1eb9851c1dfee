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

pub use actor::Resume;
pub use command::ActorError;
pub use handle::{ConfigHandle, ConfigSummaryInfo};

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use kepler_protocol::ErrorKind;

use crate::events::ConfigEvents;
use crate::logs::LogStore;
use crate::orchestrator::{Channels, Orchestrator};
use crate::persistence::{ConfigState, ConfigStore, StoredSnapshot};

/// Starts the actor for a checked snapshot. With `resume`, process groups
/// left by a previous daemon (or actor) are killed first and the services
/// that were up are started again.
pub fn spawn(
    stored: StoredSnapshot,
    store: ConfigStore,
    state: ConfigState,
    resume: bool,
) -> Result<ConfigHandle, ActorError> {
    let start = if resume {
        Resume::Recover(state.clone())
    } else {
        Resume::Fresh
    };
    spawn_with(stored, store, state, start)
}

/// [`spawn`], saying how the actor begins.
pub fn spawn_with(
    stored: StoredSnapshot,
    store: ConfigStore,
    state: ConfigState,
    start: Resume,
) -> Result<ConfigHandle, ActorError> {
    let StoredSnapshot {
        owner_uid,
        source,
        config,
        ..
    } = stored;
    let path: PathBuf = config.config_file.clone();
    let logs = store
        .open_logs()
        .map_err(|e| crate::logs::LogError::Io {
            path: store.logs_dir(),
            source: e.into(),
        })
        .and_then(|dir| LogStore::in_dir(crate::logs::LogDir::from_trusted(dir)))
        .map_err(|e| {
            ActorError::new(
                ErrorKind::Failed,
                format!("cannot open the logs of {}: {e}", path.display()),
            )
        })?;
    let config = Arc::new(config);
    let service_count = config.services.len();
    let events = ConfigEvents::new(config.clone());
    let (commands, inbox) = mpsc::unbounded_channel();
    let (mailbox, internal) = mpsc::unbounded_channel();
    let (health, health_events) = mpsc::unbounded_channel();
    let (watch, watch_events) = mpsc::unbounded_channel();
    let orchestrator = Orchestrator::new(
        config,
        store.clone(),
        owner_uid,
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
        start,
    ));
    Ok(
        ConfigHandle::new(path, store, events, logs, commands, service_count)
            .owned_by(owner_uid, source),
    )
}
