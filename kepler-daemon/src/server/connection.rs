//! One client connection: handshake, then requests served concurrently.
//!
//! Every request runs in its own task and answers through one writer task, so
//! a long stream (log follow) never delays a `ps` on the same connection.
//! A frame that cannot be decoded closes this connection only. What one
//! user may hold (requests in flight, idle time) comes from [`super::budget`].

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kepler_protocol::{
    handshake, BincodeCodec, ClientMessage, ErrorKind, FrameError, Hello, HelloReply, Response,
    ServerMessage, MAX_FRAME_LEN, MAX_REQUEST_LEN,
};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

use super::budget::ConnectionTicket;
use super::handlers::{self, RequestContext};
use super::outbox::Outbox;
use super::peer::{self, Caller};
use crate::daemon::Daemon;

/// A client must say hello within this time or be dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long in-flight requests get to answer when the daemon shuts down,
/// and then how long what they answered gets to reach the client: a client
/// that does not read is dropped after that, so it never holds up a stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn serve_connection(
    stream: UnixStream,
    caller: Caller,
    ticket: ConnectionTicket,
    daemon: Arc<Daemon>,
) {
    let codec = BincodeCodec::<Hello, HelloReply>::with_limits(MAX_REQUEST_LEN, MAX_FRAME_LEN);
    let mut framed = Framed::new(stream, codec);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(hello))) => hello,
        Ok(Some(Err(e))) => {
            tracing::debug!(pid = caller.pid, "bad hello, closing: {e}");
            return;
        }
        Ok(None) | Err(_) => return,
    };
    if let Err(reason) = peer::authorize(&caller, peer::kepler_gid()) {
        tracing::info!(uid = caller.uid, pid = caller.pid, "refused connection");
        let _ = framed.send(HelloReply::Refused { reason }).await;
        return;
    }
    if *daemon.upgrading().borrow() {
        // Accepted just before the hand-over: told so, rather than welcomed
        // and then dropped with the process image.
        let reason = handshake::UPGRADING_REFUSAL.to_string();
        let _ = framed.send(HelloReply::Refused { reason }).await;
        return;
    }
    let reply = handshake::answer(&hello);
    let welcomed = matches!(reply, HelloReply::Welcome { .. });
    if framed.send(reply).await.is_err() || !welcomed {
        return;
    }

    let framed = framed.map_codec(|codec| codec.retype::<ClientMessage, ServerMessage>());
    serve_requests(framed, caller, ticket, daemon).await;
}

/// A welcomed connection, as the protocol's requests see it.
pub type RequestFrames = Framed<UnixStream, BincodeCodec<ClientMessage, ServerMessage>>;

/// A connection a previous daemon welcomed and handed over in an upgrade:
/// served from its next request on, starting with the bytes of it that the
/// previous daemon had already read.
pub async fn serve_handed_over(
    stream: UnixStream,
    buffered: Vec<u8>,
    caller: Caller,
    ticket: ConnectionTicket,
    daemon: Arc<Daemon>,
) {
    let codec =
        BincodeCodec::<ClientMessage, ServerMessage>::with_limits(MAX_REQUEST_LEN, MAX_FRAME_LEN);
    let mut parts = tokio_util::codec::FramedParts::new::<ServerMessage>(stream, codec);
    parts.read_buf.extend_from_slice(&buffered);
    serve_requests(Framed::from_parts(parts), caller, ticket, daemon).await;
}

async fn serve_requests(
    framed: RequestFrames,
    caller: Caller,
    ticket: ConnectionTicket,
    daemon: Arc<Daemon>,
) {
    let (mut sink, mut frames) = framed.split();
    let (outbox, mut outgoing) = Outbox::new();
    let mut writer = tokio::spawn(async move {
        // Each frame's share of the outbox budget is given back once sent.
        while let Some(queued) = outgoing.recv().await {
            let message = queued.message;
            let (id, is_response) = match &message {
                ServerMessage::Response { id, .. } => (*id, true),
                ServerMessage::Event { id, .. } => (*id, false),
            };
            match sink.send(message).await {
                Ok(()) => {}
                // Nothing of it was written: answer in its place, so the
                // client is not left waiting.
                Err(FrameError::TooLarge(len)) => {
                    tracing::warn!(id, len, "a message was too large to send");
                    let response = Response::Error {
                        kind: ErrorKind::Failed,
                        message: format!(
                            "the answer ({len} bytes) is larger than a message may be \
                             ({MAX_FRAME_LEN} bytes); ask for less"
                        ),
                    };
                    if is_response
                        && sink
                            .send(ServerMessage::Response { id, response })
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        sink
    });

    let caller = Arc::new(caller);
    let _open = daemon.open_connection();
    let limits = daemon.connection_limits();
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_per_connection));
    let mut requests = JoinSet::new();
    let mut closing = daemon.closing_connections();
    let mut upgrading = daemon.upgrading();
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(ClientMessage { id, request })) => {
                    // Backpressure: past the limit, stop reading until a request finishes.
                    let permit = tokio::select! {
                        permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
                        _ = crate::daemon::raised(&mut closing) => break,
                    };
                    let ctx = RequestContext::new(id, daemon.clone(), caller.clone(), outbox.clone());
                    // Past the user's share the request is answered at once,
                    // so nothing of it waits.
                    let user_permit = ticket.start_request();
                    let upgrading = daemon.upgrading();
                    requests.spawn(async move {
                        match user_permit {
                            Ok(user_permit) => {
                                ended_by_upgrade(request, ctx, upgrading).await;
                                drop(user_permit);
                            }
                            Err(reason) => handlers::refuse(ctx, reason).await,
                        }
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(uid = caller.uid, pid = caller.pid, "closing connection: {e}");
                    break;
                }
                None => break,
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                if requests.is_empty() {
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
            }
            () = &mut idle, if requests.is_empty() => {
                tracing::debug!(uid = caller.uid, pid = caller.pid, "closing an idle connection");
                break;
            }
            _ = crate::daemon::raised(&mut upgrading) => {
                // Every request but the upgrade's own ends at once, answered
                // with `DaemonUpgraded`.
                let drain = async { while requests.join_next().await.is_some() {} };
                let drained = tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_ok();
                if drained {
                    // Everything answered: the connection itself goes to
                    // the new daemon, with what was read of the next request.
                    drop(outbox);
                    if let Ok(Ok(sink)) = tokio::time::timeout(DRAIN_TIMEOUT, &mut writer).await {
                        if let Ok(framed) = frames.reunite(sink) {
                            let parts = framed.into_parts();
                            daemon.hand_over_connection(parts.io, parts.read_buf.to_vec());
                        }
                    }
                    drop(ticket);
                    return;
                }
                break;
            }
            _ = crate::daemon::raised(&mut closing) => {
                let drain = async { while requests.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
                break;
            }
        }
    }
    // Handlers only talk to actors, so cancelling them never interrupts a state
    // change half-way: the actor finishes the command on its own.
    requests.abort_all();
    drop(outbox);
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        tracing::info!(
            uid = caller.uid,
            pid = caller.pid,
            "dropping a client that does not read"
        );
        writer.abort();
    }
    drop(ticket);
}

/// Runs a request, ending it with `DaemonUpgraded` if the daemon hands
/// over to a new binary first (the upgrade request itself runs to its end:
/// its answer is what the client waits for).
async fn ended_by_upgrade(
    request: kepler_protocol::Request,
    ctx: RequestContext,
    mut upgrading: tokio::sync::watch::Receiver<bool>,
) {
    if matches!(request, kepler_protocol::Request::Upgrade { .. }) {
        return handlers::handle(request, ctx).await;
    }
    let ending = ctx.detached();
    tokio::select! {
        () = handlers::handle(request, ctx) => {}
        () = crate::daemon::raised(&mut upgrading) => {
            ending.respond_error(
                ErrorKind::DaemonUpgraded,
                "the daemon was upgraded to a new binary while this ran; run the command \
                 again to reach the new daemon (services were not restarted)",
            )
            .await;
        }
    }
}
