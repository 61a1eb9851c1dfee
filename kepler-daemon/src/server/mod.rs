//! The protocol server: accepts connections on the Unix socket, checks the
//! caller's credentials once, and hands each request to its handler.
//!
//! Security boundary: [`peer::authorize`] is the only place that decides who
//! may talk to the daemon; handlers receive the already-checked [`Caller`].
//! [`budget`] decides how much of the daemon one user may hold: the accept
//! loop never stops accepting, so root's pool is always reachable, and a
//! connection past a user's share is told why and closed.

mod budget;
mod connection;
pub mod handlers;
mod outbox;
pub mod peer;

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kepler_protocol::{BincodeCodec, Hello, HelloReply};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::task::TaskTracker;

use crate::daemon::Daemon;
use budget::Budgets;
pub use budget::ConnectionLimits;
pub use peer::Caller;

/// Refusals being told at once; past this, a refused connection is closed
/// without a word, so refusing cannot cost more than admitting.
const MAX_REFUSALS: usize = 64;
/// How long a refused client gets to say hello and read why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// A hello is a version number and a short string.
const MAX_HELLO_LEN: usize = 4096;
/// Pause after a failed accept (e.g. out of descriptors), so the loop does
/// not spin while nothing can be accepted.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts connections until the daemon starts closing its connections, then
/// returns once every connection task has flushed and ended.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    let tracker = TaskTracker::new();
    let budgets = Budgets::new(daemon.connection_limits());
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut closing = daemon.closing_connections();
    let mut upgrading = daemon.upgrading();
    // Connections a previous daemon welcomed, handed over in an upgrade.
    for (fd, buffered) in daemon.take_connections() {
        let stream = std::os::unix::net::UnixStream::from(fd);
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("cannot serve a handed-over connection: {e}");
                continue;
            }
        };
        let Ok(caller) = peer::peer_of(&stream) else {
            continue;
        };
        if let Ok(ticket) = budgets.admit(caller.uid) {
            let daemon = daemon.clone();
            tracker.spawn(connection::serve_handed_over(
                stream, buffered, caller, ticket, daemon,
            ));
        }
    }
    loop {
        let stream = tokio::select! {
            // An upgrade stops accepting before anything else is looked at.
            biased;
            _ = crate::daemon::raised(&mut upgrading) => {
                // New clients queue in the socket's backlog for the next
                // daemon; the listener must stay open until the execve.
                tracker.close();
                tracker.wait().await;
                daemon.mark_drained();
                std::future::pending::<()>().await;
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = crate::daemon::raised(&mut closing) => break,
        };
        let caller = match peer::peer_of(&stream) {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!("could not read peer credentials, closing: {e}");
                continue;
            }
        };
        match budgets.admit(caller.uid) {
            Ok(ticket) => {
                let daemon = daemon.clone();
                tracker.spawn(connection::serve_connection(stream, caller, ticket, daemon));
            }
            Err(reason) => {
                tracing::info!(uid = caller.uid, pid = caller.pid, "{reason}");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tracker.spawn(refuse(stream, reason, permit));
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Tells a client past its share why it is not served. The hello is read
/// first: closing a Unix socket with unread data resets it, and the client
/// would see "connection reset" instead of the reason.
async fn refuse(stream: UnixStream, reason: String, _permit: OwnedSemaphorePermit) {
    let codec = BincodeCodec::<Hello, HelloReply>::with_limits(MAX_HELLO_LEN, MAX_HELLO_LEN);
    let mut framed = Framed::new(stream, codec);
    if let Ok(Some(Ok(_))) = tokio::time::timeout(REFUSAL_TIMEOUT, framed.next()).await {
        let reply = HelloReply::Refused { reason };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, framed.send(reply)).await;
    }
}
