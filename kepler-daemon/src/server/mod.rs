//! The protocol server: accepts connections on the Unix socket, checks the
//! caller's credentials once, and hands each request to its handler.
//!
//! Security boundary: [`peer::authorize`] is the only place that decides who
//! may talk to the daemon; handlers receive the already-checked [`Caller`].

mod connection;
pub mod handlers;
mod outbox;
pub mod peer;

use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::daemon::Daemon;
pub use peer::Caller;

/// Connections served at once; one more waits in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Accepts connections until the daemon starts closing its connections, then
/// returns once every connection task has flushed and ended.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut closing = daemon.closing_connections();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
            _ = crate::daemon::raised(&mut closing) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = crate::daemon::raised(&mut closing) => break,
        };
        let daemon = daemon.clone();
        tracker.spawn(async move {
            connection::serve_connection(stream, daemon).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}
