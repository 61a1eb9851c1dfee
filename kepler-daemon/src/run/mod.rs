//! `kepler run`: an ephemeral run of a config, as CI pipelines use it.
//!
//! The request handler (`server/handlers/run.rs`) bakes the config afresh
//! and starts it like `kepler start`; from then on a supervisor task owns
//! the run, whether or not its client stays: it watches the config's state
//! broadcast, judges how the run ends ([`verdict`]), stops every service
//! when `--abort-on-failure` or `--exit-code-from` say so (or when an
//! attached client goes away), and once every service has ended removes
//! the config's stored state the way `stop --clean` does. A [`RunLease`]
//! marks the config as held by the run meanwhile, so a second run, a
//! `start` or a `recreate` is refused with a clear message.

mod lease;
mod supervisor;
mod verdict;

pub use lease::{RunLease, RunLeases};
pub use supervisor::{end_run, supervise, RunOutcome, Supervision};
pub use verdict::Verdict;
