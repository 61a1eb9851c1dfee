//! The health state machine of one service, Docker's rules, free of time and
//! I/O: the runner feeds it probe results and sends what it returns.
//!
//! - A success makes the service Healthy at once and resets the failure count.
//! - A failure adds one to the consecutive failure count; `retries` of them in
//!   a row make it Unhealthy. Further failures keep counting.
//! - While the service is still Starting (never healthy yet) and inside its
//!   `start_period`, failures are not counted at all; the caller says whether
//!   a result fell inside the start period.

/// What `ps` shows for a service with a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// No verdict yet: no success, and fewer than `retries` counted failures.
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// One observable change: the status, the consecutive failure count, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub previous: HealthStatus,
    pub status: HealthStatus,
    pub consecutive_failures: u32,
    /// Why the probe that caused this change failed; `None` after a success.
    pub reason: Option<String>,
}

impl HealthChange {
    /// Whether the status itself changed (as opposed to only the count).
    pub fn is_transition(&self) -> bool {
        self.previous != self.status
    }
}

/// Counts failures and decides the status; see the module docs.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    status: HealthStatus,
    failures: u32,
    retries: u32,
}

impl HealthTracker {
    /// `retries` of 0 behaves like 1, as in Docker: the first counted failure
    /// makes the service unhealthy.
    pub fn new(retries: u32) -> Self {
        Self {
            status: HealthStatus::Starting,
            failures: 0,
            retries: retries.max(1),
        }
    }

    /// A tracker that carries on from a previous daemon's.
    pub fn resumed(retries: u32, status: HealthStatus, failures: u32) -> Self {
        Self {
            status,
            failures,
            retries: retries.max(1),
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Whether a failure now would be forgiven, given that the start period
    /// has or has not elapsed: only a service that has never been healthy
    /// gets the grace.
    pub fn forgives_failures(&self, in_start_period: bool) -> bool {
        in_start_period && self.status == HealthStatus::Starting
    }

    /// Records one probe result (`Err` carries the failure reason) and
    /// returns the change it caused, if any.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        in_start_period: bool,
    ) -> Option<HealthChange> {
        let previous = self.status;
        let before = self.failures;
        let reason = match result {
            Ok(()) => {
                self.failures = 0;
                self.status = HealthStatus::Healthy;
                None
            }
            Err(_) if self.forgives_failures(in_start_period) => return None,
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.retries {
                    self.status = HealthStatus::Unhealthy;
                }
                Some(reason)
            }
        };
        (previous != self.status || before != self.failures).then_some(HealthChange {
            previous,
            status: self.status,
            consecutive_failures: self.failures,
            reason,
        })
    }
}
