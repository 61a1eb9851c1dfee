//! Fuzz target: the daemon's frame decoder (`BincodeCodec`) fed bytes a
//! hostile or broken client could send.
//!
//! Inputs are random bytes and mutations of valid sessions (a `Hello` frame,
//! then `ClientMessage` frames): flipped bits, truncations, spliced length
//! fields and huge lengths, delivered in random chunk sizes as a socket would.
//! Decoding must return a message or an error, never panic, never loop, and
//! never allocate much past the 16 MiB frame limit. Valid requests must
//! survive an encode/decode round trip. See `fuzz_support` for the budget.

mod fuzz_support;

use std::path::PathBuf;

use fuzz_support::{fuzz, peak_allocation, CountingAllocator, Target};
use kepler_protocol::{
    BincodeCodec, ClientMessage, ConfigRef, Hello, HelloReply, Request, ServerMessage, StartMode,
    SysEnv, MAX_FRAME_LEN,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------
// Valid messages

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_./-]{0,24}",
        any::<String>().prop_map(|s| s.chars().take(32).collect()),
    ]
}

fn config_ref() -> impl Strategy<Value = ConfigRef> {
    text().prop_map(|path| ConfigRef {
        path: PathBuf::from(path),
    })
}

fn sys_env() -> impl Strategy<Value = SysEnv> {
    btree_map(text(), text(), 0..4)
}

fn start_mode() -> impl Strategy<Value = StartMode> {
    prop_oneof![
        Just(StartMode::Detached),
        Just(StartMode::Attached),
        any::<Option<u64>>().prop_map(|timeout_ms| StartMode::Wait { timeout_ms }),
    ]
}

fn services() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::DaemonStatus),
        Just(Request::Shutdown),
        (config_ref(), sys_env(), services(), start_mode()).prop_map(
            |(config, sys_env, services, mode)| Request::Start {
                config,
                sys_env,
                services,
                mode,
            }
        ),
        (
            config_ref(),
            services(),
            any::<Option<i32>>(),
            any::<bool>()
        )
            .prop_map(|(config, services, signal, clean)| Request::Stop {
                config,
                services,
                signal,
                clean,
            }),
        (config_ref(), sys_env(), services(), start_mode()).prop_map(
            |(config, sys_env, services, mode)| Request::Restart {
                config,
                sys_env,
                services,
                mode,
            }
        ),
        (config_ref(), sys_env())
            .prop_map(|(config, sys_env)| Request::Recreate { config, sys_env }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(force, dry_run)| Request::Prune { force, dry_run }),
        proptest::option::of(config_ref()).prop_map(|config| Request::Ps { config }),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    (any::<u64>(), request()).prop_map(|(id, request)| ClientMessage { id, request })
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), text()).prop_map(|(protocol, version)| Hello { protocol, version })
}

/// The bytes a well-behaved client sends: its hello, then requests.
fn session() -> impl Strategy<Value = Vec<u8>> {
    (hello(), vec(client_message(), 0..4)).prop_map(|(hello, messages)| {
        let mut bytes = BytesMut::new();
        let mut codec = BincodeCodec::<HelloReply, Hello>::new();
        codec.encode(hello, &mut bytes).expect("encode hello");
        let mut codec = codec.retype::<ServerMessage, ClientMessage>();
        for message in messages {
            codec.encode(message, &mut bytes).expect("encode request");
        }
        bytes.to_vec()
    })
}

// ---------------------------------------------------------------------------
// Mutations

/// Length-like values most likely to find an off-by-one or a huge allocation.
fn nasty_u64() -> impl Strategy<Value = u64> {
    let frame = MAX_FRAME_LEN as u64;
    prop_oneof![
        3 => prop::sample::select(vec![
            0,
            1,
            0x7f,
            0xff,
            0xffff,
            frame - 1,
            frame,
            frame + 1,
            u64::from(u32::MAX) - 1,
            u64::from(u32::MAX),
            1 << 31,
            1 << 32,
            i64::MAX as u64,
            u64::MAX,
        ]),
        1 => any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        value: u8,
    },
    Truncate {
        at: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: u8,
    },
    /// A 4-byte big-endian value: the shape of the frame header.
    FrameLength {
        at: Index,
        value: u32,
    },
    /// An 8-byte little-endian value: the shape of bincode's lengths, enum
    /// tags' neighbours and integers.
    BodyLength {
        at: Index,
        value: u64,
    },
    /// Copies a run of the input elsewhere (repeats a frame or a field).
    Duplicate {
        from: Index,
        len: u8,
        to: Index,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        (any::<Index>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<Index>(), any::<u8>()).prop_map(|(at, len)| Mutation::Remove { at, len }),
        (any::<Index>(), nasty_u64()).prop_map(|(at, value)| Mutation::FrameLength {
            at,
            value: value as u32
        }),
        (any::<Index>(), nasty_u64()).prop_map(|(at, value)| Mutation::BodyLength { at, value }),
        (any::<Index>(), any::<u8>(), any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
    ]
}

fn overwrite(bytes: &mut Vec<u8>, at: usize, with: &[u8]) {
    let end = (at + with.len()).min(bytes.len());
    bytes.splice(at..end, with.iter().copied());
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    // Positions index the input as it is now; `len + 1` lets inserts append.
    let pos = |at: &Index, len: usize| at.index(len + 1);
    match mutation {
        Mutation::FlipBit { at, bit } if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Mutation::SetByte { at, value } if !bytes.is_empty() => {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        Mutation::Truncate { at } => bytes.truncate(pos(at, bytes.len())),
        Mutation::Insert { at, bytes: new } => {
            let i = pos(at, bytes.len());
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let i = pos(at, bytes.len());
            let end = (i + usize::from(*len)).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::FrameLength { at, value } => {
            let i = pos(at, bytes.len());
            overwrite(bytes, i, &value.to_be_bytes());
        }
        Mutation::BodyLength { at, value } => {
            let i = pos(at, bytes.len());
            overwrite(bytes, i, &value.to_le_bytes());
        }
        Mutation::Duplicate { from, len, to } if !bytes.is_empty() => {
            let start = from.index(bytes.len());
            let end = (start + usize::from(*len)).min(bytes.len());
            let run = bytes[start..end].to_vec();
            let i = pos(to, bytes.len());
            bytes.splice(i..i, run);
        }
        _ => {}
    }
}

/// Bytes on the wire and how many arrive per read.
#[derive(Clone)]
struct Wire {
    bytes: Vec<u8>,
    chunk: usize,
}

/// Shown as a byte-string literal, ready to paste into a regression test.
impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chunk size {}, {} bytes:\nb\"{}\"",
            self.chunk,
            self.bytes.len(),
            self.bytes.escape_ascii()
        )
    }
}

fn chunk_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(usize::MAX), 1usize..8, 8usize..512]
}

fn mutated_session() -> impl Strategy<Value = Wire> {
    (session(), vec(mutation(), 1..6), chunk_size()).prop_map(|(mut bytes, mutations, chunk)| {
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        Wire { bytes, chunk }
    })
}

fn random_bytes() -> impl Strategy<Value = Wire> {
    let bytes = prop_oneof![
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..1024),
        // A plausible frame header in front of noise reaches the body decoder.
        (0u32..256, vec(any::<u8>(), 0..256)).prop_map(|(len, body)| {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend(body);
            bytes
        }),
    ];
    (bytes, chunk_size()).prop_map(|(bytes, chunk)| Wire { bytes, chunk })
}

// ---------------------------------------------------------------------------
// The decoder under test

/// What one input may allocate: one maximal frame's buffer (the length
/// codec reserves what a header announces), plus a margin per input byte.
fn allocation_limit(input_len: usize) -> usize {
    MAX_FRAME_LEN + (1 << 20) + 64 * input_len
}

/// Feeds one read's worth of bytes to `codec`. `Ok(None)` means the codec
/// refused the bytes, after which the server drops the peer; otherwise it
/// says how many messages decoded.
fn feed<C: Decoder>(
    codec: &mut C,
    buf: &mut BytesMut,
    chunk: &[u8],
) -> Result<Option<usize>, TestCaseError> {
    buf.extend_from_slice(chunk);
    let mut decoded = 0;
    loop {
        let before = buf.len();
        match codec.decode(buf) {
            Ok(Some(_)) => {
                decoded += 1;
                // A message that consumes nothing would be returned forever.
                prop_assert!(
                    buf.len() < before,
                    "decoded a message without consuming input"
                );
            }
            Ok(None) => return Ok(Some(decoded)),
            Err(_) => return Ok(None),
        }
    }
}

/// The server's view: a `Hello` frame, then `ClientMessage` frames on the
/// same framing state.
fn decode_session(wire: &Wire) -> Result<(), TestCaseError> {
    let mut greeting = Some(BincodeCodec::<Hello, HelloReply>::new());
    let mut requests = None;
    let mut buf = BytesMut::new();
    for chunk in wire.bytes.chunks(wire.chunk.max(1)) {
        if let Some(codec) = &mut requests {
            if feed(codec, &mut buf, chunk)?.is_none() {
                return Ok(());
            }
            continue;
        }
        let Some(codec) = &mut greeting else {
            unreachable!("either greeting or serving");
        };
        // The server reads exactly one hello; more bytes in the same read
        // are requests, so they go to the retyped codec.
        buf.extend_from_slice(chunk);
        match codec.decode(&mut buf) {
            Ok(None) => {}
            Err(_) => return Ok(()),
            Ok(Some(_hello)) => {
                let codec = greeting.take().expect("greeting codec");
                let mut codec = codec.retype::<ClientMessage, ServerMessage>();
                if feed(&mut codec, &mut buf, &[])?.is_none() {
                    return Ok(());
                }
                requests = Some(codec);
            }
        }
    }
    Ok(())
}

/// One message type on its own, including the end-of-stream path.
fn decode_stream<C: Decoder>(mut codec: C, wire: &Wire) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    for chunk in wire.bytes.chunks(wire.chunk.max(1)) {
        if feed(&mut codec, &mut buf, chunk)?.is_none() {
            return Ok(());
        }
    }
    let _ = codec.decode_eof(&mut buf);
    Ok(())
}

fn check_decoders(wire: &Wire) -> Result<(), TestCaseError> {
    let (result, peak) = peak_allocation(|| {
        decode_session(wire)?;
        decode_stream(BincodeCodec::<ClientMessage, ()>::new(), wire)?;
        decode_stream(BincodeCodec::<Hello, ()>::new(), wire)?;
        // The CLI's side: a daemon's answers are trusted more, but a broken
        // one must not crash the CLI either.
        decode_stream(BincodeCodec::<ServerMessage, ()>::new(), wire)
    });
    result?;
    let limit = allocation_limit(wire.bytes.len());
    prop_assert!(
        peak <= limit,
        "decoding {} bytes allocated {peak} bytes at once (limit {limit})",
        wire.bytes.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Targets

#[test]
fn fuzz_frames_hostile_bytes_never_panic_loop_or_overallocate() {
    let target = Target {
        name: "frames/decode",
        batch: 256,
    };
    let input = prop_oneof![1 => random_bytes(), 2 => mutated_session()];
    fuzz(target, input, check_decoders);
}

#[test]
fn fuzz_frames_valid_requests_round_trip_in_any_chunking() {
    let target = Target {
        name: "frames/round-trip",
        batch: 128,
    };
    let input = (vec(client_message(), 1..4), chunk_size());
    fuzz(target, input, |(messages, chunk)| {
        let mut codec = BincodeCodec::<ClientMessage, ClientMessage>::new();
        let mut wire = BytesMut::new();
        for message in messages {
            codec
                .encode(message.clone(), &mut wire)
                .map_err(|e| TestCaseError::fail(format!("encode failed: {e}")))?;
        }
        let mut decoded = Vec::new();
        let mut buf = BytesMut::new();
        for piece in wire.chunks((*chunk).max(1)) {
            buf.extend_from_slice(piece);
            while let Some(message) = codec
                .decode(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?
            {
                decoded.push(message);
            }
        }
        prop_assert_eq!(&decoded, messages);
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(())
    });
}

/// The oversized header the codec must refuse without waiting for 4 GiB.
#[test]
fn a_maximal_length_header_is_refused_at_once() {
    let mut codec = BincodeCodec::<ClientMessage, ServerMessage>::new();
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let (result, peak) = peak_allocation(|| codec.decode(&mut buf));
    assert!(result.is_err(), "a 4 GiB frame header was accepted");
    assert!(peak < 1 << 20, "refusing it allocated {peak} bytes");
}
