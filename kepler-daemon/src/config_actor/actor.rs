//! The actor loop.

use kepler_protocol::ErrorKind;
use tokio::sync::mpsc;

use super::command::{ActorError, Command};
use crate::orchestrator::recover;
use crate::orchestrator::{Internal, Orchestrator};
use crate::persistence::ConfigState;

pub async fn run(
    mut orchestrator: Orchestrator,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    mut internal: mpsc::UnboundedReceiver<Internal>,
    resume: Option<ConfigState>,
) {
    if let Some(state) = resume {
        recover::kill_survivors(&state).await;
        orchestrator.resume(&state);
    }
    orchestrator.persist_if_dirty();
    loop {
        tokio::select! {
            // Reports from our own tasks first: they settle state that
            // commands may depend on.
            biased;
            Some(message) = internal.recv() => {
                orchestrator.handle_internal(message);
                while let Ok(message) = internal.try_recv() {
                    orchestrator.handle_internal(message);
                }
            }
            command = inbox.recv() => match command {
                None | Some(Command::Close) => break,
                Some(command) => handle(&mut orchestrator, command).await,
            },
        }
        orchestrator.persist_if_dirty();
    }
    orchestrator.persist_if_dirty();
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
                    orchestrator.plan(&restarted)
                })
                .map_err(|e| ActorError::new(ErrorKind::NotFound, e));
            let _ = reply.send(result);
        }
        Command::Ps { reply } => {
            let _ = reply.send(orchestrator.infos());
        }
        Command::Summary { reply } => {
            let _ = reply.send((orchestrator.running_count(), orchestrator.infos().len()));
        }
        Command::Recreate {
            caller,
            sys_env,
            reply,
        } => {
            let _ = reply.send(recreate(orchestrator, &caller, sys_env).await);
        }
        Command::Close => {}
    }
}

/// Bakes the config again from its source file and swaps the snapshot in.
async fn recreate(
    orchestrator: &mut Orchestrator,
    caller: &crate::server::Caller,
    sys_env: std::collections::BTreeMap<String, String>,
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
    let baked = crate::registry::bake_for(caller, &path, sys_env).await?;
    orchestrator.store().write_bake(&baked).map_err(|e| {
        ActorError::new(ErrorKind::Failed, format!("cannot write the snapshot: {e}"))
    })?;
    orchestrator.replace_config(std::sync::Arc::new(baked.config));
    Ok(())
}
