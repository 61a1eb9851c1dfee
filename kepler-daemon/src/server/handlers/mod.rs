//! Request dispatch: one file per request kind, each turning a request into a
//! response (and, for long operations, events) for one caller.

mod config_access;
mod daemon_status;
mod inspect;
mod logs;
mod prune;
mod ps;
mod recreate;
mod run;
mod scale;
mod shutdown;
mod start;
mod stats;
mod stop;
mod top;
mod upgrade;

use std::sync::Arc;

use kepler_protocol::{ErrorKind, Event, Request, RequestId, Response, ServerMessage};

use super::outbox::Outbox;
use super::Caller;
use crate::config_actor::ActorError;
use crate::daemon::Daemon;

fn error_response(error: ActorError) -> Response {
    Response::Error {
        kind: error.kind,
        message: error.message,
    }
}

/// Everything a handler may use: the daemon, the checked caller, and a way to
/// push events tagged with this request's id.
pub struct RequestContext {
    pub id: RequestId,
    pub daemon: Arc<Daemon>,
    pub caller: Arc<Caller>,
    outbox: Outbox,
}

impl RequestContext {
    pub(super) fn new(
        id: RequestId,
        daemon: Arc<Daemon>,
        caller: Arc<Caller>,
        outbox: Outbox,
    ) -> Self {
        RequestContext {
            id,
            daemon,
            caller,
            outbox,
        }
    }

    /// The same request's context for a task that must not be cancelled
    /// with the request (its events still reach the client while it is there).
    pub fn detached(&self) -> RequestContext {
        RequestContext {
            id: self.id,
            daemon: self.daemon.clone(),
            caller: self.caller.clone(),
            outbox: self.outbox.clone(),
        }
    }

    /// Pushes an event to the client; false once the client has gone.
    pub async fn emit(&self, event: Event) -> bool {
        self.outbox
            .send(ServerMessage::Event { id: self.id, event })
            .await
            .is_ok()
    }

    /// Ends the request with an error.
    pub async fn respond_error(self, kind: ErrorKind, message: &str) {
        self.respond(Response::Error {
            kind,
            message: message.to_string(),
        })
        .await;
    }

    async fn respond(self, response: Response) {
        let _ = self
            .outbox
            .send(ServerMessage::Response {
                id: self.id,
                response,
            })
            .await;
    }
}

/// Answers a request that a bound on the caller kept from running.
pub async fn refuse(ctx: RequestContext, reason: String) {
    let response = Response::Error {
        kind: ErrorKind::LimitReached,
        message: reason,
    };
    ctx.respond(response).await;
}

pub async fn handle(request: Request, ctx: RequestContext) {
    let response = match request {
        Request::Ping => Response::Pong,
        Request::DaemonStatus => daemon_status::handle(&ctx).await,
        Request::Shutdown => shutdown::handle(&ctx).await,
        Request::Start {
            config,
            sys_env,
            services,
            mode,
        } => start::handle(&ctx, config, sys_env, services, mode, start::Verb::Start)
            .await
            .unwrap_or_else(error_response),
        Request::Restart {
            config,
            sys_env,
            services,
            mode,
        } => start::handle(&ctx, config, sys_env, services, mode, start::Verb::Restart)
            .await
            .unwrap_or_else(error_response),
        Request::Stop {
            config,
            services,
            signal,
            clean,
        } => stop::handle(&ctx, config, services, signal, clean)
            .await
            .unwrap_or_else(error_response),
        Request::Recreate { config, sys_env } => recreate::handle(&ctx, config, sys_env)
            .await
            .unwrap_or_else(error_response),
        Request::Prune { force, dry_run } => prune::handle(&ctx, force, dry_run)
            .await
            .unwrap_or_else(error_response),
        Request::Ps { config } => ps::handle(&ctx, config)
            .await
            .unwrap_or_else(error_response),
        Request::Logs {
            config,
            services,
            range,
            include_hooks,
            follow,
            filter,
        } => logs::handle(&ctx, config, services, range, include_hooks, follow, filter)
            .await
            .unwrap_or_else(error_response),
        Request::LogsPage { config, cursor } => logs::page(&ctx, config, cursor)
            .await
            .unwrap_or_else(error_response),
        Request::Run {
            config,
            sys_env,
            services,
            mode,
            options,
        } => run::handle(&ctx, config, sys_env, services, mode, options)
            .await
            .unwrap_or_else(error_response),
        Request::Scale {
            config,
            services,
            timeout_ms,
        } => scale::handle(&ctx, config, services, timeout_ms)
            .await
            .unwrap_or_else(error_response),
        Request::Stats {
            config,
            services,
            since_ms,
        } => stats::handle(&ctx, config, services, since_ms)
            .await
            .unwrap_or_else(error_response),
        Request::Inspect { config, services } => inspect::handle(&ctx, config, services)
            .await
            .unwrap_or_else(error_response),
        Request::Top { config, history } => top::handle(&ctx, config, history)
            .await
            .unwrap_or_else(error_response),
        Request::Upgrade { binary } => upgrade::handle(&ctx, binary).await,
    };
    ctx.respond(response).await;
}
