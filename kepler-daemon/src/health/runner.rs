//! One task per service with a healthcheck: probe every `interval`, feed the
//! results to the [`HealthTracker`], and send each change to the
//! orchestrator as a [`HealthEvent`].
//!
//! Runners share nothing: a slow probe only delays its own service's next
//! probe, never another service's. The interval is measured from the end of
//! one probe to the start of the next, so probes of a service never overlap,
//! and the first probe runs one `interval` after the start (as in Docker).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use super::probe::{ProbeGroups, Prober};
use super::spec::HealthSpec;
use super::state::{HealthStatus, HealthTracker};
use crate::process::{wait_group_gone, KILL_TIMEOUT};

/// The shortest interval honoured. The config refuses 0s; this only keeps a
/// hand-made spec from turning a runner into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// A change of a service's health: a status transition, a change of its
/// consecutive failure count, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub service: String,
    /// The generation given in the [`HealthSpec`], echoed back.
    pub generation: u64,
    pub status: HealthStatus,
    /// The status before this event; equal to `status` when only the count
    /// changed.
    pub previous: HealthStatus,
    pub consecutive_failures: u32,
    /// Why the probe behind this event failed; `None` after a success.
    pub reason: Option<String>,
}

impl HealthEvent {
    /// A status transition (starting->healthy, healthy->unhealthy, ...), as
    /// opposed to a failure count update only.
    pub fn is_transition(&self) -> bool {
        self.previous != self.status
    }
}

/// Owns a running health check. Dropping it stops the runner and SIGKILLs
/// the group of a command probe in flight; [`stop`](Self::stop) also waits
/// until that group is gone.
#[derive(Debug)]
pub struct HealthHandle {
    task: JoinHandle<()>,
    groups: Arc<ProbeGroups>,
}

/// Starts probing `spec` on the probe thread (see [`probe_runtime`]), or on
/// the current tokio runtime if that thread could not be started (like
/// [`tokio::spawn`], this must then be called from within one). Events go
/// to `events`; the runner ends by itself once their receiver is dropped.
pub fn start(spec: HealthSpec, events: mpsc::UnboundedSender<HealthEvent>) -> HealthHandle {
    let groups = Arc::new(ProbeGroups::default());
    let runner = run(spec, events, Arc::clone(&groups));
    let task = match probe_runtime() {
        Some(runtime) => runtime.spawn(runner),
        None => tokio::spawn(runner),
    };
    HealthHandle { task, groups }
}

/// The runtime all health checks share: a single thread of its own.
///
/// A probe is a timer and a few socket events, and spends its time waiting
/// on the kernel. On the daemon's multi-threaded runtime each of those
/// events also woke an idle worker to come and steal the task; with 100
/// one-second HTTP checks those cross-thread wakeups were most of what the
/// daemon spent. One thread serves every probe without them; the only
/// work a probe does on it is its own, short (a command probe's spawn).
fn probe_runtime() -> Option<&'static Handle> {
    static RUNTIME: OnceLock<Option<Handle>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| crate::runtime_thread::start("kepler-health"))
        .as_ref()
}

impl HealthHandle {
    /// Stops the runner and waits until the process group of a command
    /// probe that was in flight is gone (bounded by [`KILL_TIMEOUT`]).
    pub async fn stop(mut self) {
        self.task.abort();
        // Cancelled (or, were there a bug, panicked): either way it is over.
        let _ = (&mut self.task).await;
        let pgid = self.groups.in_flight.swap(0, Ordering::AcqRel);
        if pgid > 1 {
            // The probe's guard sent SIGKILL when the task was dropped.
            let _ = tokio::time::timeout(KILL_TIMEOUT, wait_group_gone(pgid)).await;
        }
    }

    /// Whether the runner has ended (its event receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The process group of the latest command probe, if one was spawned.
    /// Lets tests check that nothing of a probe survives it.
    pub fn last_probe_pgid(&self) -> Option<i32> {
        Some(self.groups.last.load(Ordering::Acquire)).filter(|&pgid| pgid > 0)
    }
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    spec: HealthSpec,
    events: mpsc::UnboundedSender<HealthEvent>,
    groups: Arc<ProbeGroups>,
) {
    let HealthSpec {
        service,
        generation,
        interval,
        timeout,
        retries,
        start_period,
        target,
        cgroups,
        resumed,
    } = spec;
    let interval = interval.max(MIN_INTERVAL);
    let up_for = resumed.map(|r| r.up_for).unwrap_or_default();
    let started = Instant::now()
        .checked_sub(up_for)
        .unwrap_or_else(Instant::now);
    let cgroups = cgroups.map(|cgroups| (cgroups, service.clone()));
    let mut prober = Prober::new(target, timeout, groups, cgroups);
    let mut tracker = match resumed {
        Some(resumed) => HealthTracker::resumed(retries, resumed.status, resumed.failures),
        None => HealthTracker::new(retries),
    };
    loop {
        tokio::select! {
            () = sleep(interval) => {}
            () = events.closed() => return,
        }
        let result = prober.probe().await;
        // Judged when the result is in, as Docker does.
        let in_start_period = started.elapsed() < start_period;
        if let Err(reason) = &result {
            tracing::debug!(
                service,
                generation,
                reason,
                in_start_period,
                "health probe failed"
            );
        }
        let Some(change) = tracker.record(result, in_start_period) else {
            continue;
        };
        let event = HealthEvent {
            service: service.clone(),
            generation,
            status: change.status,
            previous: change.previous,
            consecutive_failures: change.consecutive_failures,
            reason: change.reason,
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
