//! Framing: each frame is a 4-byte big-endian length followed by a bincode body.
//!
//! The length prefix comes from tokio-util's `LengthDelimitedCodec`, which also
//! enforces the maximum frame size; this type only adds (de)serialisation, so
//! commands never touch bytes.

use std::marker::PhantomData;

use bincode::Options;
use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Largest frame either side accepts (16 MiB). A peer announcing more is cut off.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(#[from] bincode::Error),
    /// Nothing was sent: the message would not fit in a frame the peer reads.
    #[error("message of {0} bytes is larger than the other side accepts")]
    TooLarge(u64),
}

fn bincode_options() -> impl Options {
    // The limit keeps a hostile length field inside a body from allocating more
    // than a frame could ever hold.
    bincode::DefaultOptions::new()
        .with_limit(MAX_FRAME_LEN as u64)
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Decodes frames into `In` and encodes `Out` into frames.
pub struct BincodeCodec<In, Out> {
    frames: LengthDelimitedCodec,
    /// Largest frame `encode` produces.
    send_limit: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> BincodeCodec<In, Out> {
    /// Frames up to [`MAX_FRAME_LEN`] both ways.
    pub fn new() -> Self {
        Self::with_limits(MAX_FRAME_LEN, MAX_FRAME_LEN)
    }

    /// Frames up to `receive` bytes are read and up to `send` bytes written
    /// (each at most [`MAX_FRAME_LEN`]). The daemon reads requests with
    /// [`crate::MAX_REQUEST_LEN`]; the CLI sends with the same bound, so it
    /// refuses a request the daemon would cut off.
    pub fn with_limits(receive: usize, send: usize) -> Self {
        Self {
            frames: LengthDelimitedCodec::builder()
                .max_frame_length(receive.min(MAX_FRAME_LEN))
                .new_codec(),
            send_limit: send.min(MAX_FRAME_LEN),
            _types: PhantomData,
        }
    }

    /// Reuses the framing state with other message types (after the handshake).
    pub fn retype<In2, Out2>(self) -> BincodeCodec<In2, Out2> {
        BincodeCodec {
            frames: self.frames,
            send_limit: self.send_limit,
            _types: PhantomData,
        }
    }
}

impl<In, Out> Default for BincodeCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In: DeserializeOwned, Out> Decoder for BincodeCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.frames.decode(src)? {
            Some(frame) => Ok(Some(bincode_options().deserialize(&frame)?)),
            None => Ok(None),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for BincodeCodec<In, Out> {
    type Error = FrameError;

    /// Writes the length prefix `LengthDelimitedCodec` reads (4 bytes, big
    /// endian) and serialises straight into `dst`: a page of logs is
    /// megabytes, and an intermediate buffer cost two extra copies of it.
    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        // Unlimited here, so an oversized message is told apart from a bad one.
        let len = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .serialized_size(&item)?;
        if len > self.send_limit as u64 {
            return Err(FrameError::TooLarge(len));
        }
        let len = len as usize;
        let start = dst.len();
        dst.reserve(4 + len);
        dst.put_u32(len as u32);
        if let Err(e) = bincode_options().serialize_into((&mut *dst).writer(), &item) {
            dst.truncate(start);
            return Err(e.into());
        }
        debug_assert_eq!(dst.len() - start, 4 + len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, Request};

    #[test]
    fn round_trips_a_message() {
        let mut codec = BincodeCodec::<ClientMessage, ClientMessage>::new();
        let mut buf = BytesMut::new();
        let msg = ClientMessage {
            id: 7,
            request: Request::Ping,
        };
        codec.encode(msg.clone(), &mut buf).unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_a_frame_larger_than_the_limit() {
        let mut codec = BincodeCodec::<ClientMessage, ClientMessage>::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        buf.extend_from_slice(&[0u8; 16]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Io(_))));
    }

    #[test]
    fn frames_are_what_the_length_delimited_codec_reads() {
        let mut codec = BincodeCodec::<ClientMessage, ClientMessage>::new();
        let mut buf = BytesMut::new();
        let msg = ClientMessage {
            id: 1,
            request: Request::Ping,
        };
        codec.encode(msg.clone(), &mut buf).unwrap();
        codec.encode(msg.clone(), &mut buf).unwrap();
        let body = bincode_options().serialize(&msg).unwrap();
        let mut expected = (body.len() as u32).to_be_bytes().to_vec();
        expected.extend_from_slice(&body);
        assert_eq!(&buf[..expected.len()], &expected[..]);
        let mut frames = LengthDelimitedCodec::new();
        assert_eq!(frames.decode(&mut buf).unwrap().unwrap(), &body[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg));
    }

    #[test]
    fn a_message_too_large_for_a_frame_is_not_sent() {
        let mut codec = BincodeCodec::<ClientMessage, crate::ServerMessage>::new();
        let mut buf = BytesMut::new();
        let mut lines = crate::LogBatch::new();
        let id = lines.add_source(crate::LogSource {
            service: "web".into(),
            hook: None,
            stderr: false,
            show_time: false,
            replica: None,
        });
        lines.push_line(id, 1, &vec![b'x'; MAX_FRAME_LEN + 1]);
        let message = crate::ServerMessage::Response {
            id: 1,
            response: crate::Response::LogPage {
                lines,
                cursor: None,
            },
        };
        assert!(matches!(
            codec.encode(message, &mut buf),
            Err(FrameError::TooLarge(len)) if len > MAX_FRAME_LEN as u64
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn each_direction_has_its_own_limit() {
        let request = ClientMessage {
            id: 1,
            request: Request::Ping,
        };
        let mut sender =
            BincodeCodec::<ClientMessage, ClientMessage>::with_limits(MAX_FRAME_LEN, 8);
        let mut buf = BytesMut::new();
        assert!(matches!(
            sender.encode(request.clone(), &mut buf),
            Err(FrameError::TooLarge(_))
        ));
        assert!(buf.is_empty());

        let mut receiver =
            BincodeCodec::<ClientMessage, ClientMessage>::with_limits(8, MAX_FRAME_LEN);
        receiver.encode(request, &mut buf).unwrap();
        assert!(matches!(receiver.decode(&mut buf), Err(FrameError::Io(_))));
    }

    #[test]
    fn refuses_garbage_bodies() {
        let mut codec = BincodeCodec::<ClientMessage, ClientMessage>::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&4u32.to_be_bytes());
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
    }
}
