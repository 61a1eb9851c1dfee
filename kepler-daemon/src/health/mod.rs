//! Health checks: one runner task per service with a `healthcheck`, probing
//! it and telling the orchestrator when its health changes.
//!
//! The orchestrator prepares a [`HealthSpec`] from the baked config (this is
//! where an unusable probe, such as an `https://` URL, is refused), calls
//! [`start`] with the sending half of its event channel, and keeps the
//! [`HealthHandle`]; dropping the handle stops the checks.
//!
//! ```ignore
//! let spec = HealthSpec::new(name, generation, &service.healthcheck?, &process_spec)?;
//! let handle = health::start(spec, events_tx.clone());
//! while let Some(event) = events_rx.recv().await {
//!     if event.generation != current_generation(&event.service) { continue; }
//!     if event.is_transition() { /* Healthy: post_healthcheck_success, ... */ }
//! }
//! ```
//!
//! Semantics are Docker's (see [`state`] for the rules): probes run every
//! `interval` from the start; failures inside `start_period` do not count
//! while the service has never been healthy, but a success there makes it
//! healthy at once; `retries` consecutive failures make it unhealthy.
//!
//! Split: [`spec`] prepares, `probe` runs one probe (with `http` for the
//! `http:` kind), [`state`] decides, [`runner`] loops.

mod http;
mod probe;
pub mod runner;
pub mod spec;
pub mod state;

pub use runner::{start, HealthEvent, HealthHandle};
pub use spec::{HealthSpec, HealthSpecError, ResumedHealth};
pub use state::{HealthChange, HealthStatus, HealthTracker};
