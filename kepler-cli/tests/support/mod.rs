//! A stand-in daemon for driving the real `kepler` binary: it listens where
//! the CLI looks (`$KEPLER_DAEMON_PATH/kepler.sock`), answers the handshake,
//! and lets a test read each request and script each answer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kepler_protocol::{
    handshake, BincodeCodec, ClientMessage, Event, Hello, HelloReply, Response, ServerMessage,
    SOCKET_FILE, STATE_DIR_ENV,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio_util::codec::Framed;

/// How long any single step may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct FakeDaemon {
    pub state_dir: tempfile::TempDir,
    /// Holds `kepler.yaml`; the CLI runs here.
    pub project: tempfile::TempDir,
    listener: UnixListener,
}

pub struct FakeConnection {
    framed: Framed<UnixStream, BincodeCodec<ClientMessage, ServerMessage>>,
}

impl FakeDaemon {
    pub fn new() -> Self {
        let state_dir = tempfile::tempdir().unwrap();
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("kepler.yaml"), "services: {}\n").unwrap();
        let listener = UnixListener::bind(state_dir.path().join(SOCKET_FILE)).unwrap();
        FakeDaemon {
            state_dir,
            project,
            listener,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.project
            .path()
            .join("kepler.yaml")
            .canonicalize()
            .unwrap()
    }

    /// Starts `kepler <args>` in the project directory, output piped.
    pub fn kepler(&self, args: &[&str]) -> Child {
        kepler_in(self.project.path(), self.state_dir.path(), args)
    }

    /// [`FakeDaemon::kepler`] with extra environment variables.
    pub fn kepler_with_env(&self, args: &[&str], env: &[(String, String)]) -> Child {
        let mut command = command_in(self.project.path(), self.state_dir.path(), args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.spawn().expect("run the kepler binary")
    }

    /// Whether a client has connected and not been accepted yet.
    pub fn has_waiting_connection(&self) -> bool {
        use futures::FutureExt;
        self.listener.accept().now_or_never().is_some()
    }

    /// Accepts the CLI's connection and completes the handshake.
    pub async fn accept(&self) -> FakeConnection {
        let (stream, _) = within(self.listener.accept()).await.unwrap();
        let mut framed = Framed::new(stream, BincodeCodec::<Hello, HelloReply>::new());
        let hello = within(framed.next()).await.unwrap().unwrap();
        framed.send(handshake::answer(&hello)).await.unwrap();
        FakeConnection {
            framed: framed.map_codec(|codec| codec.retype()),
        }
    }
}

impl FakeConnection {
    pub async fn recv(&mut self) -> ClientMessage {
        within(self.framed.next())
            .await
            .expect("the CLI closed the connection")
            .expect("a readable request")
    }

    pub async fn event(&mut self, id: u64, event: Event) {
        self.framed
            .send(ServerMessage::Event { id, event })
            .await
            .unwrap();
    }

    pub async fn respond(&mut self, id: u64, response: Response) {
        self.framed
            .send(ServerMessage::Response { id, response })
            .await
            .unwrap();
    }
}

pub fn kepler_in(dir: &Path, state_dir: &Path, args: &[&str]) -> Child {
    command_in(dir, state_dir, args)
        .spawn()
        .expect("run the kepler binary")
}

fn command_in(dir: &Path, state_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kepler"));
    command
        .args(args)
        .current_dir(dir)
        .env(STATE_DIR_ENV, state_dir)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `future`, or a test failure once [`DEADLINE`] has passed.
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("step did not finish within the deadline")
}
