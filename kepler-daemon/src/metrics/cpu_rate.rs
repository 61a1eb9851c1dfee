//! CPU percentage over the interval between two samples.

use std::time::{Duration, Instant};

/// Samples closer together than this keep the previous percentage: the
/// kernel's CPU accounting is too coarse to say anything over a few ms.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The last CPU sample of one running process tree, and the percentage
/// computed from it. 100 % is one CPU kept busy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuRate {
    /// When the last sample was taken and the cumulative CPU time then.
    last: (Instant, u64),
    percent: f64,
}

impl CpuRate {
    /// A tree started at `started` with no CPU time used yet: the first
    /// sample gives the average since the start.
    pub fn since(started: Instant) -> Self {
        CpuRate {
            last: (started, 0),
            percent: 0.0,
        }
    }

    /// Records `cpu_usec` (cumulative) read at `now` and returns the
    /// percentage since the previous sample; a sample taken less than
    /// [`MIN_INTERVAL`] after it returns the previous percentage.
    pub fn update(&mut self, now: Instant, cpu_usec: u64) -> f64 {
        let (then, used) = self.last;
        let elapsed = now.saturating_duration_since(then);
        if elapsed >= MIN_INTERVAL {
            // Without cgroups a process that exits takes its time along, so
            // the total can shrink; that interval counts as idle.
            let spent = cpu_usec.saturating_sub(used);
            self.percent = spent as f64 * 100.0 / elapsed.as_micros() as f64;
            self.last = (now, cpu_usec);
        }
        self.percent
    }

    /// The percentage from the latest sample.
    pub fn percent(&self) -> f64 {
        self.percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_the_interval_since_the_previous_sample() {
        let start = Instant::now();
        let mut rate = CpuRate::since(start);
        // Half a CPU on average over the first second.
        assert_eq!(rate.update(start + Duration::from_secs(1), 500_000), 50.0);
        // Two CPUs over the next half second.
        let next = start + Duration::from_millis(1500);
        assert_eq!(rate.update(next, 1_500_000), 200.0);
        // Asked again at once: the same answer, the sample not replaced.
        assert_eq!(
            rate.update(next + Duration::from_millis(5), 1_500_100),
            200.0
        );
        // Idle since.
        assert_eq!(rate.update(next + Duration::from_secs(1), 1_500_000), 0.0);
        assert_eq!(rate.percent(), 0.0);
    }

    #[test]
    fn a_shrinking_total_counts_as_idle() {
        let start = Instant::now();
        let mut rate = CpuRate::since(start);
        rate.update(start + Duration::from_secs(1), 900_000);
        assert_eq!(rate.update(start + Duration::from_secs(2), 100_000), 0.0);
    }
}
