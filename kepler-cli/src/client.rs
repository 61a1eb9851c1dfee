//! The CLI's side of a connection: connect, say hello, send requests.
//!
//! Connection failures are turned into messages that say what to do: start the
//! daemon, or join the `kepler` group. Requests carry ids, so one connection
//! can have several running at once; `send` and `next_message` expose that.

use std::io;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use kepler_protocol::{
    handshake, BincodeCodec, ClientMessage, Event, Hello, HelloReply, Request, RequestId, Response,
    ServerMessage, KEPLER_GROUP, SOCKET_FILE,
};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

pub struct Client {
    framed: Framed<UnixStream, BincodeCodec<ServerMessage, ClientMessage>>,
    next_id: RequestId,
}

/// Why a connection could not be made; `NotRunning` lets callers such as
/// `daemon status` and `daemon restart` react to it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "the kepler daemon is not running (no socket at {}); start it with \
         `sudo kepler daemon start -d`",
        .0.display()
    )]
    NotRunning(PathBuf),
    #[error(
        "permission denied on {}: only root and members of the `{KEPLER_GROUP}` group may use \
         kepler; ask an administrator to run `sudo usermod -aG {KEPLER_GROUP} $USER`, then log \
         in again",
        .0.display()
    )]
    NoAccess(PathBuf),
    #[error("cannot connect to {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The daemon would not serve us; `daemon_pid` is its pid, from the
    /// socket's peer credentials.
    #[error("{reason}")]
    Refused {
        reason: String,
        daemon_pid: Option<u32>,
    },
    #[error("the daemon closed the connection during the handshake")]
    Closed,
}

pub fn socket_path() -> PathBuf {
    kepler_protocol::state_dir().join(SOCKET_FILE)
}

impl Client {
    pub async fn connect() -> Result<Self, ConnectError> {
        let path = socket_path();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ConnectError::NotRunning(path.clone())
                }
                io::ErrorKind::PermissionDenied => ConnectError::NoAccess(path.clone()),
                _ => ConnectError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        let daemon_pid = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        let mut framed = Framed::new(stream, BincodeCodec::<HelloReply, Hello>::new());
        let hello = Hello::current();
        framed
            .send(hello.clone())
            .await
            .map_err(|_| ConnectError::Closed)?;
        match framed.next().await {
            Some(Ok(HelloReply::Welcome { protocol, version })) if protocol == hello.protocol => {
                let _ = version;
            }
            Some(Ok(HelloReply::Welcome { protocol, version })) => {
                return Err(ConnectError::Refused {
                    reason: handshake::version_mismatch(
                        &hello.version,
                        hello.protocol,
                        &version,
                        protocol,
                    ),
                    daemon_pid,
                })
            }
            Some(Ok(HelloReply::Refused { reason })) => {
                return Err(ConnectError::Refused { reason, daemon_pid })
            }
            _ => return Err(ConnectError::Closed),
        }
        Ok(Client {
            framed: framed.map_codec(|c| c.retype()),
            next_id: 1,
        })
    }

    /// Sends `request` and returns its response, ignoring pushed events.
    pub async fn request(&mut self, request: Request) -> Result<Response> {
        self.request_with_events(request, |_| {}).await
    }

    /// Sends `request`, hands every event pushed for it to `on_event`, and
    /// returns the final response. Error responses become errors.
    pub async fn request_with_events(
        &mut self,
        request: Request,
        mut on_event: impl FnMut(Event),
    ) -> Result<Response> {
        let id = self.send(request).await?;
        loop {
            match self.next_message().await? {
                ServerMessage::Event { id: got, event } if got == id => on_event(event),
                ServerMessage::Response { id: got, response } if got == id => {
                    return into_result(response)
                }
                _ => continue,
            }
        }
    }

    /// Sends `request` without waiting for its answer and returns its id, so
    /// a caller can have several requests running on this connection (e.g. a
    /// stop while an attached start is still streaming).
    pub async fn send(&mut self, request: Request) -> Result<RequestId> {
        let id = self.next_id;
        self.next_id += 1;
        self.framed
            .send(ClientMessage { id, request })
            .await
            .context("cannot send the request to the daemon")?;
        Ok(id)
    }

    /// The next message of any request. Cancel-safe: a message is never lost
    /// when this future is dropped in a `select!`.
    pub async fn next_message(&mut self) -> Result<ServerMessage> {
        match self.framed.next().await {
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => bail!("lost the connection to the daemon: {e}"),
            None => bail!("the daemon closed the connection before answering"),
        }
    }

    /// Waits until the daemon closes the connection.
    pub async fn closed(mut self) {
        while let Some(Ok(_)) = self.framed.next().await {}
    }
}

/// A final response as a result: `Response::Error` becomes an error carrying
/// the daemon's message, which is what the user sees.
pub fn into_result(response: Response) -> Result<Response> {
    match response {
        Response::Error { message, .. } => Err(anyhow!(message)),
        other => Ok(other),
    }
}
