//! How a run ends: its exit code, and when to stop every service.
//!
//! Fed the config's state changes in order, a [`Verdict`] notes the first
//! service that ended badly (exited non-zero and will not be restarted, or
//! failed: could not spawn, gave up restarting, dependency failed), and
//! says when the run must stop everything: at that failure with
//! `--abort-on-failure`, or when the `--exit-code-from` service ends.

use kepler_protocol::{RunOptions, ServiceStatus};

use crate::events::StateChange;

/// A service's end that decides a run's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ending {
    service: String,
    /// `None` when the service was stopped before it ended on its own.
    code: Option<i32>,
    /// How it ended, for a person: "exited (3)", "failed: why".
    what: String,
}

#[derive(Debug, Clone)]
pub struct Verdict {
    options: RunOptions,
    first_failure: Option<Ending>,
    /// The end that stopped the run (`--abort-on-failure`, `--exit-code-from`).
    decided: Option<Ending>,
}

impl Verdict {
    pub fn new(options: RunOptions) -> Self {
        Verdict {
            options,
            first_failure: None,
            decided: None,
        }
    }

    /// Takes one state change; says why every service must now stop, the
    /// first time the options call for it.
    pub fn observe(&mut self, change: &StateChange) -> Option<String> {
        let ending = ending_of(change)?;
        let failed = ending.code.is_some_and(|code| code != 0);
        if failed && self.first_failure.is_none() {
            self.first_failure = Some(ending.clone());
        }
        if self.decided.is_some() {
            return None;
        }
        let from = self.options.exit_code_from.as_deref() == Some(&*change.service);
        if from {
            let why = format!(
                "`{}` {}; stopping every service (--exit-code-from {})",
                ending.service, ending.what, ending.service
            );
            self.decided = Some(ending);
            return Some(why);
        }
        if failed && self.options.abort_on_failure {
            let why = format!(
                "`{}` {}; stopping every service (--abort-on-failure)",
                ending.service, ending.what
            );
            self.decided = Some(ending);
            return Some(why);
        }
        None
    }

    /// The run's exit code, and which service decided it when not 0: the
    /// deciding service's code, else the first failure's, else 0.
    pub fn exit(&self) -> (i32, Option<String>) {
        let decided = self.decided.as_ref().filter(|e| e.code.is_some());
        match decided.or(self.first_failure.as_ref()) {
            Some(Ending {
                service,
                code: Some(code),
                what,
            }) if *code != 0 => (*code, Some(format!("`{service}` {what}"))),
            _ => (0, None),
        }
    }
}

/// The end a settled state change marks: exit 0, a failure's code (1 when
/// there is no process exit to take it from), or stopped before its end.
fn ending_of(change: &StateChange) -> Option<Ending> {
    if !change.settled {
        return None;
    }
    let code = match change.status {
        ServiceStatus::Exited(code) => Some(code),
        ServiceStatus::Failed => Some(1),
        ServiceStatus::Stopped => None,
        _ => return None,
    };
    let mut what = change.status.name();
    if let (ServiceStatus::Failed, Some(reason)) = (change.status, &change.reason) {
        what = format!("{what}: {reason}");
    }
    Some(Ending {
        service: change.service.to_string(),
        code,
        what,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn change(service: &str, status: ServiceStatus, settled: bool) -> StateChange {
        StateChange {
            service: Arc::from(service),
            status,
            reason: (status == ServiceStatus::Failed).then(|| "cannot start: boom".into()),
            quiescent: settled,
            settled,
            at_us: 0,
        }
    }

    fn options(abort: bool, from: Option<&str>) -> RunOptions {
        RunOptions {
            keep_state: false,
            abort_on_failure: abort,
            exit_code_from: from.map(String::from),
        }
    }

    #[test]
    fn successes_and_user_stops_exit_0() {
        let mut verdict = Verdict::new(options(false, None));
        assert_eq!(
            verdict.observe(&change("job", ServiceStatus::Exited(0), true)),
            None
        );
        verdict.observe(&change("web", ServiceStatus::Stopped, true));
        assert_eq!(verdict.exit(), (0, None));
    }

    #[test]
    fn the_first_failure_that_will_not_be_retried_gives_the_code() {
        let mut verdict = Verdict::new(options(false, None));
        // Will be restarted: not an end yet.
        verdict.observe(&change("api", ServiceStatus::Exited(7), false));
        verdict.observe(&change("api", ServiceStatus::Exited(3), true));
        verdict.observe(&change("web", ServiceStatus::Failed, true));
        assert_eq!(verdict.exit(), (3, Some("`api` exited (3)".into())));
    }

    #[test]
    fn a_spawn_or_dependency_failure_counts_as_1() {
        let mut verdict = Verdict::new(options(false, None));
        verdict.observe(&change("web", ServiceStatus::Failed, true));
        assert_eq!(
            verdict.exit(),
            (1, Some("`web` failed: cannot start: boom".into()))
        );
    }

    #[test]
    fn abort_on_failure_stops_everything_at_the_first_failure_only() {
        let mut verdict = Verdict::new(options(true, None));
        assert_eq!(
            verdict.observe(&change("ok", ServiceStatus::Exited(0), true)),
            None
        );
        let why = verdict
            .observe(&change("api", ServiceStatus::Exited(4), true))
            .unwrap();
        assert_eq!(
            why,
            "`api` exited (4); stopping every service (--abort-on-failure)"
        );
        assert_eq!(
            verdict.observe(&change("db", ServiceStatus::Exited(9), true)),
            None
        );
        assert_eq!(verdict.exit(), (4, Some("`api` exited (4)".into())));
    }

    #[test]
    fn exit_code_from_takes_that_services_code_whatever_failed_before() {
        let mut verdict = Verdict::new(options(false, Some("tests")));
        assert_eq!(
            verdict.observe(&change("flaky", ServiceStatus::Exited(2), true)),
            None
        );
        let why = verdict
            .observe(&change("tests", ServiceStatus::Exited(0), true))
            .unwrap();
        assert!(why.contains("--exit-code-from tests"), "{why}");
        assert_eq!(verdict.exit(), (0, None));

        let mut verdict = Verdict::new(options(false, Some("tests")));
        verdict.observe(&change("tests", ServiceStatus::Exited(5), true));
        assert_eq!(verdict.exit(), (5, Some("`tests` exited (5)".into())));
    }

    #[test]
    fn exit_code_from_a_service_stopped_by_the_user_falls_back_to_the_failures() {
        let mut verdict = Verdict::new(options(false, Some("tests")));
        verdict.observe(&change("db", ServiceStatus::Exited(2), true));
        assert!(verdict
            .observe(&change("tests", ServiceStatus::Stopped, true))
            .is_some());
        assert_eq!(verdict.exit(), (2, Some("`db` exited (2)".into())));
    }
}
