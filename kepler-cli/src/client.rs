//! The CLI's side of a connection: connect, say hello, send requests.
//!
//! Connection failures are turned into messages that say what to do: start the
//! daemon, or join the `kepler` group. Requests carry ids, so one connection
//! can have several running at once; `send` and `next_message` expose that.
//!
//! Nothing is sent, not even the hello, before the other end is known to be
//! the daemon: the socket file must be a socket owned by root (not a
//! symlink), and the process answering on it must run as root (its kernel
//! credentials, `SO_PEERCRED`). Anyone else there could be relaying or
//! impersonating the daemon to read what the CLI sends and to choose what it
//! prints.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use kepler_protocol::{
    handshake, BincodeCodec, ClientMessage, ErrorKind, Event, Hello, HelloReply, Request,
    RequestId, Response, ServerMessage, KEPLER_GROUP, MAX_FRAME_LEN, MAX_REQUEST_LEN, SOCKET_FILE,
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
    /// What is at the socket's path, or answers on it, is not the daemon.
    #[error(
        "refusing to talk to {}: {why}. The kepler daemon runs as root and owns its socket, so \
         something else is there; nothing was sent to it. Check KEPLER_DAEMON_PATH, or have an \
         administrator remove it and start the daemon with `sudo kepler daemon start -d`",
        path.display()
    )]
    NotTheDaemon { path: PathBuf, why: String },
}

pub fn socket_path() -> PathBuf {
    kepler_protocol::state_dir().join(SOCKET_FILE)
}

fn connect_error(path: &Path, e: io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ConnectError::NotRunning(path.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => ConnectError::NoAccess(path.to_path_buf()),
        _ => ConnectError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Why the file at `path` cannot be the daemon's socket, if it cannot.
/// `lstat`, so a symlink is judged itself, not what it points to.
fn check_socket_file(path: &Path) -> Result<(), ConnectError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| connect_error(path, e))?;
    let not_the_daemon = |why: String| ConnectError::NotTheDaemon {
        path: path.to_path_buf(),
        why,
    };
    if meta.file_type().is_symlink() {
        return Err(not_the_daemon("it is a symbolic link, not a socket".into()));
    }
    if !meta.file_type().is_socket() {
        return Err(not_the_daemon("it is not a socket".into()));
    }
    if meta.uid() != 0 {
        return Err(not_the_daemon(format!(
            "the socket is owned by uid {}, not root",
            meta.uid()
        )));
    }
    Ok(())
}

/// Why the process answering on `stream` cannot be the daemon, if it cannot.
fn check_peer(path: &Path, stream: &UnixStream) -> Result<(), ConnectError> {
    let not_the_daemon = |why: String| ConnectError::NotTheDaemon {
        path: path.to_path_buf(),
        why,
    };
    let cred = stream
        .peer_cred()
        .map_err(|e| not_the_daemon(format!("cannot read who answers on it: {e}")))?;
    if cred.uid() != 0 {
        let pid = cred
            .pid()
            .map_or(String::new(), |pid| format!(" (pid {pid})"));
        return Err(not_the_daemon(format!(
            "the process answering on it{pid} runs as uid {}, not root",
            cred.uid()
        )));
    }
    Ok(())
}

impl Client {
    pub async fn connect() -> Result<Self, ConnectError> {
        let mut attempts = 1;
        loop {
            match Self::connect_once().await {
                // Reached the daemon in the middle of an upgrade: the next
                // connection waits for the new one.
                Err(ConnectError::Refused { reason, .. })
                    if reason == kepler_protocol::handshake::UPGRADING_REFUSAL
                        && attempts < READ_ATTEMPTS =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn connect_once() -> Result<Self, ConnectError> {
        let path = socket_path();
        check_socket_file(&path)?;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| connect_error(&path, e))?;
        // The file may have been swapped since it was checked; the kernel's
        // word on who listens is what counts.
        check_peer(&path, &stream)?;
        let daemon_pid = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        // Requests are sent with the bound the daemon reads them with.
        let codec = BincodeCodec::<HelloReply, Hello>::with_limits(MAX_FRAME_LEN, MAX_REQUEST_LEN);
        let mut framed = Framed::new(stream, codec);
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
    ///
    /// A request that only reads (`ps`, `daemon status`, a log page) and was
    /// cut short by a daemon upgrade is sent once more on a new connection,
    /// which the new daemon answers: it changed nothing the first time.
    pub async fn request(&mut self, request: Request) -> Result<Response> {
        if !only_reads(&request) {
            return into_result(self.response_with_events(request, |_| {}).await?);
        }
        self.read_with_events(request, |_| {}, || {}).await
    }

    /// [`request`](Self::request) for a request that only reads and whose
    /// answer comes partly as events (`ps` in parts): `on_retry` runs before
    /// each new attempt, to forget the events of the one cut short.
    pub async fn read_with_events(
        &mut self,
        request: Request,
        mut on_event: impl FnMut(Event),
        mut on_retry: impl FnMut(),
    ) -> Result<Response> {
        debug_assert!(only_reads(&request));
        // Each new attempt follows a hand-over that cut the previous one
        // short; upgrades run back to back may need a few.
        let mut attempts = 1;
        loop {
            let cut_short = match self
                .response_with_events(request.clone(), &mut on_event)
                .await
            {
                Ok(Response::Error {
                    kind: ErrorKind::DaemonUpgraded,
                    message,
                }) => anyhow!(message),
                Ok(response) => return into_result(response),
                // The connection went away (e.g. an upgrade's hand-over).
                Err(lost) => lost,
            };
            if attempts == READ_ATTEMPTS {
                return Err(cut_short);
            }
            attempts += 1;
            match Client::connect().await {
                Ok(client) => *self = client,
                Err(_) => return Err(cut_short),
            }
            on_retry();
        }
    }

    /// Sends `request`, hands every event pushed for it to `on_event`, and
    /// returns the final response. Error responses become errors.
    pub async fn request_with_events(
        &mut self,
        request: Request,
        on_event: impl FnMut(Event),
    ) -> Result<Response> {
        into_result(self.response_with_events(request, on_event).await?)
    }

    /// [`request_with_events`](Self::request_with_events), with an error
    /// response returned as it came.
    async fn response_with_events(
        &mut self,
        request: Request,
        mut on_event: impl FnMut(Event),
    ) -> Result<Response> {
        let id = self.send(request).await?;
        loop {
            match self.next_message().await? {
                ServerMessage::Event { id: got, event } if got == id => on_event(event),
                ServerMessage::Response { id: got, response } if got == id => return Ok(response),
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

/// How many times a request that only reads is sent (or a connection
/// made) when upgrades cut it short.
const READ_ATTEMPTS: u32 = 5;

/// Requests that change nothing in the daemon, safe to send again.
fn only_reads(request: &Request) -> bool {
    match request {
        Request::Ping | Request::DaemonStatus | Request::Ps { .. } => true,
        Request::Logs { follow, .. } => !follow,
        _ => false,
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
