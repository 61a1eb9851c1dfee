//! Lifecycle hooks as the orchestrator runs them.
//!
//! Pre-hooks gate what follows (a failing `pre_start` keeps the service
//! down), post-hooks are fire-and-forget (a failure is logged and nothing
//! else changes). Output goes to the owning service's log (global hooks to
//! the config's own `_kepler` log), tagged with the hook's name.

use kepler_protocol::ErrorKind;
use tokio::sync::oneshot;

use super::{Internal, Orchestrator};
use crate::config::{GlobalHookKind, HookConfig, ServiceHookKind};
use crate::config_actor::ActorError;
use crate::hooks::{run_hook, HookRun};
use crate::logs::{LogSink, Origin, Stream};
use crate::user::{identity_env, resolve_user};

/// A hook ready to run, with where its output goes.
pub struct PreparedHook {
    run: HookRun,
    stdout: LogSink,
    stderr: LogSink,
}

impl PreparedHook {
    /// Runs the hook; its output is stored as it arrives.
    pub async fn run(self) -> Result<(), String> {
        let PreparedHook {
            run,
            stdout,
            stderr,
        } = self;
        let result = run_hook(&run, |line| {
            let sink = if line.stderr { &stderr } else { &stdout };
            sink.write_lines([line.bytes.as_slice()]);
        })
        .await;
        result.map_err(|e| {
            let message = e.to_string();
            stderr.write_lines([message.as_bytes()]);
            message
        })
    }
}

/// Runs post-hooks one after another; a failure is logged (its message is
/// already in the service's log) and the rest still run.
pub async fn run_post_hooks(service: &str, hooks: Vec<PreparedHook>) {
    for hook in hooks {
        if let Err(e) = hook.run().await {
            tracing::warn!(service, "{e}");
        }
    }
}

/// [`run_post_hooks`] in a task of their own, when nothing waits for them.
pub fn spawn_post_hooks(service: String, hooks: Vec<PreparedHook>) {
    if !hooks.is_empty() {
        tokio::spawn(async move { run_post_hooks(&service, hooks).await });
    }
}

/// Runs hooks one after another, stopping at the first failure.
pub async fn run_in_order(hooks: Vec<PreparedHook>) -> Result<(), String> {
    for hook in hooks {
        hook.run().await?;
    }
    Ok(())
}

impl Orchestrator {
    fn prepare(
        &mut self,
        service: Option<&str>,
        name: &str,
        hook: &HookConfig,
    ) -> Result<PreparedHook, String> {
        let user = match (&hook.user, service) {
            (Some(user), _) => {
                let resolved = resolve_user(
                    &user.to_string(),
                    hook.group.as_ref().map(|g| g.to_string()).as_deref(),
                )
                .map_err(|e| format!("hook {name}: {e}"))?;
                if self.owner_uid != 0 && (resolved.uid == 0 || resolved.gid == 0) {
                    return Err(format!(
                        "hook {name} refused: this config belongs to uid {}, so nothing in it \
                         may run as root",
                        self.owner_uid
                    ));
                }
                self.within_owner_rights(&resolved)
                    .map_err(|e| format!("hook {name} {e}"))?;
                Some(resolved)
            }
            // Without its own user a hook runs as its service does.
            (None, Some(service)) => self.service_user(service)?,
            (None, None) if self.owner_uid != 0 => {
                Some(resolve_user(&self.owner_uid.to_string(), None).map_err(|e| e.to_string())?)
            }
            (None, None) => None,
        };
        let mut run = HookRun::new(name, service, hook, user);
        // In cgroup mode each run gets a cgroup of its own beside the
        // service's, so what it starts cannot escape either.
        run.cgroups = self
            .config_cgroup()
            .map_err(|e| format!("hook {name}: {e}"))?;
        // Like its service, a hook gets the identity of whoever it runs as,
        // unless its environment sets it.
        if let Some(resolved) = &run.user {
            for (key, value) in identity_env(resolved) {
                run.env.entry(key).or_insert(value);
            }
        }
        // A replica's hooks know which replica they run for.
        if let Some(service) = service {
            run.env.extend(self.replica_env(service));
        }
        Ok(PreparedHook {
            run,
            stdout: self.sink(service, Stream::Stdout, Origin::Hook(name.to_string())),
            stderr: self.sink(service, Stream::Stderr, Origin::Hook(name.to_string())),
        })
    }

    /// The service's hooks of these kinds that are configured, in order.
    pub(super) fn service_hooks(
        &mut self,
        service: &str,
        kinds: &[ServiceHookKind],
    ) -> Result<Vec<PreparedHook>, String> {
        let config = self.config.clone();
        let hooks = &config
            .template(service)
            .expect("every instance belongs to a service of the config")
            .hooks;
        kinds
            .iter()
            .filter_map(|kind| hooks.get(kind).map(|hook| (kind, hook)))
            .map(|(kind, hook)| self.prepare(Some(service), kind.name(), hook))
            .collect()
    }

    /// Fire-and-forget: runs a service's post-hook; failures are logged.
    pub(super) fn fire_hook(&mut self, service: &str, kind: ServiceHookKind) {
        let hooks = self.post_hooks(service, kind);
        spawn_post_hooks(service.to_string(), hooks);
    }

    /// A service's post-hook of `kind`, if configured and it can be
    /// prepared (a failure to prepare it is logged).
    pub(super) fn post_hooks(&mut self, service: &str, kind: ServiceHookKind) -> Vec<PreparedHook> {
        self.service_hooks(service, &[kind]).unwrap_or_else(|e| {
            tracing::warn!(service, "{e}");
            Vec::new()
        })
    }

    /// Runs a global hook and answers once it has finished. `on_init` runs
    /// only once per bake; an unconfigured hook answers at once.
    pub fn run_global_hook(
        &mut self,
        kind: GlobalHookKind,
        reply: oneshot::Sender<Result<(), ActorError>>,
    ) {
        let once = kind == GlobalHookKind::OnInit;
        if once && self.global_init_done {
            let _ = reply.send(Ok(()));
            return;
        }
        let config = self.config.clone();
        let Some(hook) = config.kepler.hooks.get(&kind) else {
            let _ = reply.send(Ok(()));
            return;
        };
        let prepared = match self.prepare(None, kind.name(), hook) {
            Ok(prepared) => prepared,
            Err(e) => {
                let _ = reply.send(Err(ActorError::new(ErrorKind::Failed, e)));
                return;
            }
        };
        let mailbox = self.mailbox.clone();
        tokio::spawn(async move {
            let result = prepared.run().await;
            if once && result.is_ok() {
                let _ = mailbox.send(Internal::GlobalInitDone);
            }
            let _ = reply.send(
                result.map_err(|e| ActorError::new(ErrorKind::Failed, format!("global {e}"))),
            );
        });
    }
}
