//! One client connection: handshake, then requests served concurrently.
//!
//! Every request runs in its own task and answers through one writer task, so
//! a long stream (log follow) never delays a `ps` on the same connection.
//! A frame that cannot be decoded closes this connection only.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kepler_protocol::{
    handshake, BincodeCodec, ClientMessage, ErrorKind, FrameError, Hello, HelloReply, Response,
    ServerMessage, MAX_FRAME_LEN,
};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;

use super::handlers::{self, RequestContext};
use super::outbox::Outbox;
use super::peer;
use crate::daemon::Daemon;

/// A client must say hello within this time or be dropped.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests one connection may have running at once; more wait unread.
const MAX_IN_FLIGHT: usize = 64;
/// How long in-flight requests get to answer when the daemon shuts down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn serve_connection(stream: UnixStream, daemon: Arc<Daemon>) {
    let caller = match peer::peer_of(&stream) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::warn!("could not read peer credentials, closing: {e}");
            return;
        }
    };
    let mut framed = Framed::new(stream, BincodeCodec::<Hello, HelloReply>::new());
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
    let reply = handshake::answer(&hello);
    let welcomed = matches!(reply, HelloReply::Welcome { .. });
    if framed.send(reply).await.is_err() || !welcomed {
        return;
    }

    let framed = framed.map_codec(|codec| codec.retype::<ClientMessage, ServerMessage>());
    let (mut sink, mut frames) = framed.split();
    let (outbox, mut outgoing) = Outbox::new();
    let writer = tokio::spawn(async move {
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
    });

    let caller = Arc::new(caller);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut requests = JoinSet::new();
    let mut closing = daemon.closing_connections();
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
                    requests.spawn(async move {
                        handlers::handle(request, ctx).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(uid = caller.uid, pid = caller.pid, "closing connection: {e}");
                    break;
                }
                None => break,
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
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
    let _ = writer.await;
}
