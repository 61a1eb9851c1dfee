//! What services use: CPU time and memory, sampled when someone asks.
//!
//! [`usage`] reads a service's cumulative CPU time and current memory from
//! its cgroup, or from `/proc` summed over its process group where there is
//! no cgroup. [`CpuRate`] turns two such readings into a percentage. Nothing
//! here runs on a timer: `kepler ps` samples, and the previous sample kept
//! per running service is all the state there is. Anything that reports
//! usage (history, `top`, an exporter) samples through this module.

pub mod cpu_rate;
pub mod usage;

pub use cpu_rate::CpuRate;
pub use usage::{sample, sample_one, Usage};
