//! A raw, synchronous protocol client for tests that need to speak the wire
//! format directly: pings, bad handshakes, garbage bytes, oversized frames.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use kepler_protocol::{
    BincodeCodec, ClientMessage, Hello, HelloReply, Request, Response, ServerMessage,
};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};

pub struct RawConnection {
    stream: UnixStream,
    buffer: BytesMut,
}

impl RawConnection {
    pub fn connect(socket: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(RawConnection {
            stream,
            buffer: BytesMut::new(),
        })
    }

    pub fn send<T: Serialize>(&mut self, message: T) -> io::Result<()> {
        let mut frame = BytesMut::new();
        BincodeCodec::<(), T>::new()
            .encode(message, &mut frame)
            .map_err(io::Error::other)?;
        self.stream.write_all(&frame)
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one frame; `Ok(None)` when the daemon closed the connection.
    pub fn receive<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        let mut codec = BincodeCodec::<T, ()>::new();
        loop {
            if let Some(item) = codec.decode(&mut self.buffer).map_err(io::Error::other)? {
                return Ok(Some(item));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Says hello with the current protocol; returns the daemon's reply.
    pub fn hello(&mut self) -> io::Result<HelloReply> {
        self.send(Hello::current())?;
        self.receive::<HelloReply>()?
            .ok_or_else(|| io::Error::other("closed during handshake"))
    }

    pub fn request(&mut self, id: u64, request: Request) -> io::Result<Response> {
        self.send(ClientMessage { id, request })?;
        loop {
            match self.receive::<ServerMessage>()? {
                Some(ServerMessage::Response { id: got, response }) if got == id => {
                    return Ok(response)
                }
                Some(_) => continue,
                None => return Err(io::Error::other("connection closed before the response")),
            }
        }
    }

    /// True once the daemon has closed this connection.
    pub fn is_closed_by_daemon(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}

/// Connects, says hello and pings.
pub fn ping(socket: &Path) -> io::Result<()> {
    let mut connection = RawConnection::connect(socket)?;
    match connection.hello()? {
        HelloReply::Welcome { .. } => {}
        HelloReply::Refused { reason } => return Err(io::Error::other(reason)),
    }
    match connection.request(1, Request::Ping)? {
        Response::Pong => Ok(()),
        other => Err(io::Error::other(format!("unexpected {other:?}"))),
    }
}
