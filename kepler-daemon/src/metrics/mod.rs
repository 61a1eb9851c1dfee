//! What services use: CPU time and memory, sampled by `ps` and by each
//! config's sampling tick.
//!
//! [`usage`] reads a service's cumulative CPU time and current memory from
//! its cgroup, or from `/proc` summed over its process group where there is
//! no cgroup. [`CpuRate`] turns two such readings into a percentage.
//! Everything that reports usage samples through this module: `kepler ps`
//! when asked, and the config actor's tick (`kepler.metrics.interval`),
//! which keeps the latest usage per service for `top` and the metrics
//! endpoint and appends a row to the config's [`history`]. [`summary`]
//! reads that history back for `kepler stats` and `top`'s sparklines.

pub mod cpu_rate;
pub mod history;
pub mod summary;
pub mod usage;

pub use cpu_rate::CpuRate;
pub use usage::{sample, sample_one, Usage};
