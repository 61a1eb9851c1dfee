//! The health state machine on its own: Docker's rules for retries, the
//! start period and recovery, without time or processes.

use kepler_daemon::health::{HealthStatus, HealthTracker};

use HealthStatus::{Healthy, Starting, Unhealthy};

fn fail(tracker: &mut HealthTracker, in_start_period: bool) -> Option<(HealthStatus, u32, bool)> {
    tracker
        .record(Err("down".into()), in_start_period)
        .map(|change| {
            (
                change.status,
                change.consecutive_failures,
                change.is_transition(),
            )
        })
}

fn pass(tracker: &mut HealthTracker) -> Option<(HealthStatus, u32, bool)> {
    tracker.record(Ok(()), false).map(|change| {
        (
            change.status,
            change.consecutive_failures,
            change.is_transition(),
        )
    })
}

#[test]
fn retries_consecutive_failures_make_a_service_unhealthy() {
    let mut tracker = HealthTracker::new(3);
    assert_eq!(fail(&mut tracker, false), Some((Starting, 1, false)));
    assert_eq!(fail(&mut tracker, false), Some((Starting, 2, false)));
    assert_eq!(fail(&mut tracker, false), Some((Unhealthy, 3, true)));
    assert_eq!(fail(&mut tracker, false), Some((Unhealthy, 4, false)));
}

#[test]
fn one_success_makes_a_service_healthy_and_resets_the_count() {
    let mut tracker = HealthTracker::new(2);
    assert_eq!(pass(&mut tracker), Some((Healthy, 0, true)));
    assert_eq!(pass(&mut tracker), None, "nothing changed");
    assert_eq!(fail(&mut tracker, false), Some((Healthy, 1, false)));
    assert_eq!(pass(&mut tracker), Some((Healthy, 0, false)));
    fail(&mut tracker, false);
    assert_eq!(fail(&mut tracker, false), Some((Unhealthy, 2, true)));
    let change = tracker.record(Ok(()), false).unwrap();
    assert_eq!(
        (change.previous, change.status, change.reason),
        (Unhealthy, Healthy, None)
    );
}

#[test]
fn start_period_forgives_failures_only_before_the_first_success() {
    let mut tracker = HealthTracker::new(1);
    assert_eq!(fail(&mut tracker, true), None);
    assert_eq!(fail(&mut tracker, true), None);
    assert_eq!(tracker.consecutive_failures(), 0);
    assert_eq!(pass(&mut tracker), Some((Healthy, 0, true)));
    // Still inside the start period, but the service was healthy once.
    assert_eq!(fail(&mut tracker, true), Some((Unhealthy, 1, true)));
}

#[test]
fn failures_after_the_start_period_count() {
    let mut tracker = HealthTracker::new(2);
    assert_eq!(fail(&mut tracker, true), None);
    assert_eq!(fail(&mut tracker, false), Some((Starting, 1, false)));
    assert_eq!(fail(&mut tracker, false), Some((Unhealthy, 2, true)));
}

#[test]
fn zero_retries_behaves_like_one() {
    let mut tracker = HealthTracker::new(0);
    assert_eq!(fail(&mut tracker, false), Some((Unhealthy, 1, true)));
}

#[test]
fn a_failure_carries_its_reason() {
    let mut tracker = HealthTracker::new(3);
    let change = tracker
        .record(Err("exited with code 1".into()), false)
        .unwrap();
    assert_eq!(change.reason.as_deref(), Some("exited with code 1"));
    assert_eq!(tracker.status(), Starting);
}
