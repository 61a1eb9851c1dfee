//! Stands in for a daemon of an older protocol version: `old_daemon SOCKET`
//! listens on SOCKET and refuses every client's hello with a version
//! mismatch, as such a daemon does, until it gets SIGTERM (the default
//! action ends it). Lets the e2e tests check how the CLI stops a daemon it
//! cannot talk to.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;

use bytes::BytesMut;
use kepler_protocol::{handshake, BincodeCodec, Hello, HelloReply};
use tokio_util::codec::Encoder;

fn main() {
    let socket = std::env::args().nth(1).expect("usage: old_daemon SOCKET");
    let listener = UnixListener::bind(&socket).expect("bind the socket");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            continue;
        }
        let mut hello = vec![0u8; u32::from_be_bytes(len).min(1 << 16) as usize];
        if stream.read_exact(&mut hello).is_err() {
            continue;
        }
        let ours = Hello::current();
        let reply = HelloReply::Refused {
            reason: handshake::version_mismatch(&ours.version, ours.protocol, "0.0.1", 1),
        };
        let mut frame = BytesMut::new();
        BincodeCodec::<Hello, HelloReply>::new()
            .encode(reply, &mut frame)
            .expect("encode");
        let _ = stream.write_all(&frame);
    }
}
