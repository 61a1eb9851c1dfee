//! Request dispatch: one file per request kind, each turning a request into a
//! response (and, for long operations, events) for one caller.

mod daemon_status;
mod shutdown;

use std::sync::Arc;

use kepler_protocol::{Event, Request, RequestId, Response, ServerMessage};
use tokio::sync::mpsc;

use super::Caller;
use crate::daemon::Daemon;

/// Everything a handler may use: the daemon, the checked caller, and a way to
/// push events tagged with this request's id.
pub struct RequestContext {
    pub id: RequestId,
    pub daemon: Arc<Daemon>,
    pub caller: Arc<Caller>,
    outbox: mpsc::Sender<ServerMessage>,
}

impl RequestContext {
    pub(super) fn new(
        id: RequestId,
        daemon: Arc<Daemon>,
        caller: Arc<Caller>,
        outbox: mpsc::Sender<ServerMessage>,
    ) -> Self {
        RequestContext {
            id,
            daemon,
            caller,
            outbox,
        }
    }

    /// Pushes an event to the client; false once the client has gone.
    pub async fn emit(&self, event: Event) -> bool {
        self.outbox
            .send(ServerMessage::Event { id: self.id, event })
            .await
            .is_ok()
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

pub async fn handle(request: Request, ctx: RequestContext) {
    let response = match request {
        Request::Ping => Response::Pong,
        Request::DaemonStatus => daemon_status::handle(&ctx).await,
        Request::Shutdown => shutdown::handle(&ctx).await,
        other => Response::Error {
            kind: kepler_protocol::ErrorKind::Failed,
            message: format!("{other:?} is not served by this daemon build yet"),
        },
    };
    ctx.respond(response).await;
}
