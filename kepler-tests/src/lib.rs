//! In-process test harness: the daemon library served on a throw-away state
//! directory inside the test's own tokio runtime, plus a protocol client.
//!
//! Use it for tests that need the daemon's internals or many concurrent
//! requests without paying for process start-up; use `kepler-e2e` for anything
//! a user does through the binaries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kepler_daemon::daemon::{self, Daemon};
use kepler_daemon::server::ConnectionLimits;
use kepler_daemon::state_dir::StateDir;
use kepler_protocol::{
    BincodeCodec, ClientMessage, Hello, HelloReply, Request, RequestId, ServerMessage,
};
use tempfile::TempDir;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

pub type ClientFrames = Framed<UnixStream, BincodeCodec<ServerMessage, ClientMessage>>;

/// A daemon served by the current tokio runtime.
pub struct InProcessDaemon {
    pub dir: TempDir,
    pub daemon: Arc<Daemon>,
    task: JoinHandle<std::io::Result<()>>,
}

impl InProcessDaemon {
    pub async fn start() -> Self {
        Self::start_with_limits(ConnectionLimits::default()).await
    }

    /// A daemon with other bounds on connections (e.g. a short idle timeout).
    pub async fn start_with_limits(limits: ConnectionLimits) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::prepare(&dir.path().join("state")).expect("state dir");
        let listener = state.bind_socket().expect("bind socket");
        let daemon = Daemon::with_connection_limits(state, limits);
        let task = tokio::spawn(daemon::run(listener, daemon.clone(), || {}));
        InProcessDaemon { dir, daemon, task }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.daemon.state_dir().socket_path()
    }

    /// A connection that has completed the handshake.
    pub async fn connect(&self) -> ClientFrames {
        let stream = UnixStream::connect(self.socket_path())
            .await
            .expect("connect");
        let mut framed = Framed::new(stream, BincodeCodec::<HelloReply, Hello>::new());
        framed.send(Hello::current()).await.expect("send hello");
        match framed.next().await {
            Some(Ok(HelloReply::Welcome { .. })) => framed.map_codec(|c| c.retype()),
            other => panic!("handshake failed: {other:?}"),
        }
    }

    /// Asks the daemon to shut down and waits until it has.
    pub async fn shutdown(self) {
        self.daemon.request_shutdown();
        self.task.await.expect("daemon task").expect("daemon run");
    }
}

pub async fn send(frames: &mut ClientFrames, id: RequestId, request: Request) {
    frames
        .send(ClientMessage { id, request })
        .await
        .expect("send request");
}

/// The daemon's next message, within `within`: panics if none comes, the
/// connection closes, or the frame does not decode.
pub async fn next_message(frames: &mut ClientFrames, within: Duration) -> ServerMessage {
    tokio::time::timeout(within, frames.next())
        .await
        .expect("a message in time")
        .expect("connection open")
        .expect("a valid frame")
}
