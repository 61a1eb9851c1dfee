//! The actor loop.

use std::time::Duration;

use kepler_protocol::ErrorKind;
use tokio::sync::mpsc;
use tokio::time::{self, Instant, Interval, MissedTickBehavior};

use super::command::{ActorError, Command};
use crate::health::HealthEvent;
use crate::orchestrator::recover;
use crate::orchestrator::{Internal, Orchestrator};
use crate::persistence::ConfigState;
use crate::watcher::WatchReport;

/// Least time between two state writes of a burst (a start or stop of
/// thousands of services). Each write is the whole state.json, about a
/// microsecond per service, and a burst lasts in proportion to its services
/// too: at a fixed spacing, a stop of 10,000 wrote ten times more often
/// than one of 1,000, each write ten times larger. So the spacing grows with
/// the instances ([`write_spacing`]), which keeps writes to a few percent of
/// a burst at any size. A change after a quiet spell is written at once.
const STATE_WRITE_SPACING: Duration = Duration::from_millis(100);

/// Spacing added per instance: 500 ms for 10,000.
const SPACING_PER_INSTANCE: Duration = Duration::from_micros(50);

fn write_spacing(instances: usize) -> Duration {
    let instances = u32::try_from(instances).unwrap_or(u32::MAX);
    STATE_WRITE_SPACING.max(SPACING_PER_INSTANCE.saturating_mul(instances))
}

/// When state.json was last written and when the next write is due.
#[derive(Default)]
struct StateWrites {
    last: Option<Instant>,
    due: Option<Instant>,
}

impl StateWrites {
    /// Writes the state now, or later if the last write was too recent.
    fn after_batch(&mut self, orchestrator: &mut Orchestrator) {
        if !orchestrator.is_dirty() {
            self.due = None;
            return;
        }
        let now = Instant::now();
        let spacing = write_spacing(orchestrator.instance_count());
        match self.last {
            Some(last) if now < last + spacing => {
                self.due = Some(last + spacing);
            }
            _ => {
                orchestrator.persist_if_dirty();
                self.last = Some(now);
                self.due = None;
            }
        }
    }
}

/// Everything an actor listens to.
pub struct Inboxes {
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub internal: mpsc::UnboundedReceiver<Internal>,
    pub health: mpsc::UnboundedReceiver<HealthEvent>,
    pub watch: mpsc::UnboundedReceiver<WatchReport>,
}

/// How an actor begins.
pub enum Resume {
    /// A new config, or one whose services are not running.
    Fresh,
    /// After a daemon crash or stop: kill survivors, start what was wanted.
    Recover(ConfigState),
    /// After an upgrade: take over the previous daemon's running services.
    Adopt(Box<crate::upgrade::Adoption>),
}

pub async fn run(mut orchestrator: Orchestrator, inboxes: Inboxes, resume: Resume) {
    let Inboxes {
        commands: mut inbox,
        mut internal,
        mut health,
        mut watch,
    } = inboxes;
    match resume {
        Resume::Fresh => {}
        Resume::Recover(state) => {
            recover::kill_survivors(
                &state,
                orchestrator.config(),
                orchestrator.leftover_cgroup(),
            )
            .await;
            orchestrator.resume(&state);
        }
        Resume::Adopt(adoption) => {
            let crate::upgrade::Adoption { state, mut exits } = *adoption;
            orchestrator.adopt(state, &mut exits);
        }
    }
    orchestrator.persist_if_dirty();
    let mut unloaded = None;
    let mut writes = StateWrites::default();
    let mut sampling = Sampling::new(orchestrator.sampling_interval());
    loop {
        let due = writes.due;
        tokio::select! {
            // Reports from our own tasks first: they settle state that
            // commands may depend on.
            biased;
            Some(message) = internal.recv() => {
                orchestrator.handle_internal(message);
                let mut handled = 1;
                while let Ok(message) = internal.try_recv() {
                    orchestrator.handle_internal(message);
                    handled += 1;
                }
                crate::memory::note_work(handled);
            }
            Some(event) = health.recv() => orchestrator.on_health(event),
            Some(report) = watch.recv() => orchestrator.on_watch_report(report),
            // One timer per config, whatever its number of services. Not
            // while a stop is under way: a tick reads every running service,
            // and the missed tick comes once the stop is over.
            _ = sampling.tick(), if !orchestrator.stopping() => orchestrator.sample_tick(),
            command = inbox.recv() => match command {
                None | Some(Command::Close) => break,
                Some(Command::Handover { reply, go }) => {
                    hand_over(&mut orchestrator, reply, go).await;
                }
                Some(Command::Unload { reply }) => match unload_refusal(&orchestrator) {
                    Some(refusal) => {
                        let _ = reply.send(Err(refusal));
                    }
                    None => {
                        unloaded = Some(reply);
                        break;
                    }
                },
                Some(command) => {
                    let began = Instant::now();
                    handle(&mut orchestrator, command).await;
                    sampling.after_command(began.elapsed());
                    crate::memory::note_work(1);
                }
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
        }
        writes.after_batch(&mut orchestrator);
        // A recreate may have changed the interval.
        sampling.follow(orchestrator.sampling_interval());
    }
    orchestrator.persist_if_dirty();
    orchestrator.remove_cgroup();
    drop(orchestrator);
    if let Some(reply) = unloaded {
        let _ = reply.send(Ok(()));
    }
}

/// An upgrade's hand-over of this config (see [`Command::Handover`]).
/// Once told to go, the actor never handles anything again: the process
/// image is about to be replaced, and nothing it owns may be released
/// (dropping would close pipes, kill probes or remove cgroups).
async fn hand_over(
    orchestrator: &mut Orchestrator,
    reply: tokio::sync::oneshot::Sender<Result<crate::upgrade::format::ConfigHandover, String>>,
    go: tokio::sync::oneshot::Receiver<
        Option<tokio::sync::oneshot::Sender<crate::upgrade::format::ConfigHandover>>,
    >,
) {
    orchestrator.persist_if_dirty();
    if let Some(refusal) = orchestrator.handover_refusal() {
        let _ = reply.send(Err(refusal));
        return;
    }
    let mut state = orchestrator.handover_state();
    if reply.send(Ok(state.clone())).is_err() {
        return;
    }
    let Ok(Some(full)) = go.await else {
        return;
    };
    orchestrator.release_pipes(&mut state).await;
    let _ = full.send(state);
    std::future::pending::<()>().await;
}

/// The config's sampling timer (`kepler.metrics.interval`), if sampling is on.
struct Sampling {
    every: Option<Duration>,
    timer: Option<Interval>,
}

impl Sampling {
    fn new(every: Option<Duration>) -> Self {
        let timer = every.map(|every| {
            let mut timer = time::interval_at(Instant::now() + every, every);
            // A late tick is not made up for: the next one comes a full
            // interval later.
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
            timer
        });
        Sampling { every, timer }
    }

    /// A command that outlasted the interval (a start of thousands) is
    /// followed by a full interval, not by the tick it missed: a sample
    /// then would read every service just started while the client is
    /// still being told about them.
    fn after_command(&mut self, took: Duration) {
        if let (Some(every), Some(timer)) = (self.every, &mut self.timer) {
            if took >= every {
                timer.reset();
            }
        }
    }

    fn follow(&mut self, every: Option<Duration>) {
        if every != self.every {
            *self = Sampling::new(every);
        }
    }

    async fn tick(&mut self) {
        match &mut self.timer {
            Some(timer) => {
                timer.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Why the config cannot be unloaded now, if it cannot.
fn unload_refusal(orchestrator: &Orchestrator) -> Option<ActorError> {
    let active = orchestrator.active_count();
    (active > 0).then(|| {
        ActorError::new(
            ErrorKind::Conflict,
            format!(
                "{active} service(s) of {} started again during the cleanup; its state is \
                 kept: stop them and run `kepler stop --clean` again",
                orchestrator.config().config_file.display()
            ),
        )
    })
}

async fn handle(orchestrator: &mut Orchestrator, command: Command) {
    match command {
        Command::Start { services, reply } => {
            let result = orchestrator
                .check_names(&services)
                .map(|()| {
                    orchestrator.start(&services);
                    orchestrator.plan(&services)
                })
                .map_err(|e| ActorError::new(ErrorKind::NotFound, e));
            // Acknowledged only once the new state is on disk.
            orchestrator.persist_if_dirty();
            let _ = reply.send(result);
        }
        Command::Stop {
            services,
            request,
            reply,
        } => {
            let result = orchestrator
                .check_names(&services)
                .map(|()| orchestrator.stop(&services, request))
                .map_err(|e| ActorError::new(ErrorKind::NotFound, e));
            let _ = reply.send(result);
        }
        Command::Restart { services, reply } => {
            let result = orchestrator
                .check_names(&services)
                .map(|()| {
                    let restarted = orchestrator.restart(&services);
                    orchestrator.restart_plan(&restarted)
                })
                .map_err(|e| ActorError::new(ErrorKind::NotFound, e));
            orchestrator.persist_if_dirty();
            let _ = reply.send(result);
        }
        Command::Observe { reply } => {
            let _ = reply.send(orchestrator.observation());
        }
        Command::Ps { usage, reply } => {
            let infos = if usage {
                orchestrator.ps_infos()
            } else {
                orchestrator.infos()
            };
            let _ = reply.send(infos);
        }
        Command::Views { reply } => {
            let _ = reply.send(orchestrator.views());
        }
        Command::Summary { reply } => {
            let _ = reply.send(super::ConfigSummaryInfo {
                running: orchestrator.running_count(),
                services: orchestrator.infos().len(),
                limit_notes: orchestrator.limit_notes(),
            });
        }
        Command::Recreate {
            who,
            sys_env,
            source,
            reply,
        } => {
            let _ = reply.send(recreate(orchestrator, &who, sys_env, source).await);
        }
        Command::GlobalHook { kind, reply } => orchestrator.run_global_hook(kind, reply),
        Command::Scale { requests, reply } => {
            let result = orchestrator
                .scale(&requests)
                .map_err(|e| ActorError::new(ErrorKind::NotFound, e));
            // The new counts are on disk before anyone waits on them.
            orchestrator.persist_if_dirty();
            let _ = reply.send(result);
        }
        Command::Close | Command::Unload { .. } | Command::Handover { .. } => {}
    }
}

/// Bakes the config again from its source file and swaps the snapshot in.
async fn recreate(
    orchestrator: &mut Orchestrator,
    who: &crate::unprivileged_bake::BakeAs,
    sys_env: std::collections::BTreeMap<String, String>,
    source: crate::persistence::SourceId,
) -> Result<(), ActorError> {
    let active = orchestrator.active_count();
    if active > 0 {
        return Err(ActorError::new(
            ErrorKind::Conflict,
            format!(
                "cannot recreate {}: {active} service(s) still running or starting; \
                 stop them first with `kepler stop`",
                orchestrator.config().config_file.display()
            ),
        ));
    }
    let path = orchestrator.config().config_file.clone();
    let baked = crate::registry::bake_for(who, &path, sys_env).await?;
    let stored = orchestrator
        .store()
        .write_bake(&baked, orchestrator.owner_uid(), source)
        .map_err(|e| {
            ActorError::new(ErrorKind::Failed, format!("cannot write the snapshot: {e}"))
        })?;
    orchestrator.replace_config(std::sync::Arc::new(stored.config));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_writes_of_a_burst_are_spaced_in_proportion_to_the_instances() {
        assert_eq!(write_spacing(0), STATE_WRITE_SPACING);
        assert_eq!(write_spacing(1_000), STATE_WRITE_SPACING);
        assert_eq!(write_spacing(10_000), Duration::from_millis(500));
        assert_eq!(
            write_spacing(20_000).as_millis(),
            2 * write_spacing(10_000).as_millis()
        );
        // No overflow, however many.
        assert!(write_spacing(usize::MAX) > Duration::from_secs(3600));
    }
}
