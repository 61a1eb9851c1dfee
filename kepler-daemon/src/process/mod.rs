//! Process manager: spawning services as process-group leaders, reaping,
//! stopping.
//!
//! Split by what happens to a child: [`spawn`](spawn()) starts it (with
//! `child` holding the code that runs between fork and exec), the
//! [`reaper`] collects it and every orphan it leaves, [`stop`] ends its whole
//! group, [`Scope`] ends its whole group or cgroup, [`limits`] and
//! [`signal`] hold the small vocabularies.
//!
//! How the orchestrator drives one service:
//!
//! ```ignore
//! let spawned = process::spawn_into(&spec, cgroup)?;  // pid == pgid
//! tokio::select! {
//!     status = &mut spawned.exit => {
//!         // The leader exited on its own; its group or cgroup may live on.
//!         spawned.scope.reap_leftovers().await;
//!         record_exit(status);
//!     }
//!     () = stop_requested => {
//!         let outcome = spawned.scope.stop(signal, grace).await;
//!         record_stop(spawned.exit.await, outcome);
//!     }
//! }
//! ```
//!
//! At start the daemon calls [`become_subreaper`], [`raise_fd_limit`] and
//! [`descriptors::init`].
//! All children of the daemon process must be spawned through this module;
//! see [`reaper`] for why.

mod child;
pub mod descriptors;
mod launch;
pub mod limits;
pub mod priority;
pub mod reaper;
mod scope;
pub mod signal;
mod spawn;
pub mod stop;

pub use launch::{
    children_share_descriptor_tables, join_cgroups_through_procs,
    refuse_unsharing_descriptor_tables,
};
pub use limits::{original_fd_limit, raise_fd_limit, RaisedFdLimit, ResourceLimits};
pub use reaper::{
    adopt_children, all_children, become_subreaper, pause_reaping, resume_reaping, start_reaping,
    wait_group_gone, ExitStatus, ExitWaiter,
};
pub use scope::Scope;
pub use signal::{parse_signal, signal_name, SignalParseError};
pub use spawn::{
    spawn, spawn_into, spawn_with, OutputMode, ProcessSpec, SpawnError, SpawnOptions, Spawned,
    DEFAULT_SEARCH_PATH,
};
pub use stop::{reap_leftovers, signal_group, stop_group, StopOutcome, KILL_TIMEOUT};
