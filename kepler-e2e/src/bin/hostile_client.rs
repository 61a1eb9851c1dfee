//! What a hostile `kepler` group member does to the daemon, as a program the
//! e2e tests run as that member. Each mode prints one `key=value` line that
//! the test reads; modes that hold something keep holding it until stdin
//! closes.
//!
//! - `hold SOCKET COUNT`: opens COUNT connections, saying hello on each, and
//!   reports how many were welcomed, refused (with the first reason), closed
//!   without a word, or left waiting (`stalled`).
//! - `follow SOCKET CONFIG CONNECTIONS PER_CONNECTION`: on each connection,
//!   asks PER_CONNECTION times to follow CONFIG's logs (requests that stay in
//!   flight), and reports how many were served and how many refused (with
//!   the first reason). CONFIG's services must have printed a line, so a
//!   served follow answers with it at once.
//! - `start-env SOCKET CONFIG VARS BYTES`: asks to start CONFIG with an
//!   environment of VARS variables of BYTES bytes each; prints the error it
//!   got (`none` if it got none) and its message as the reason.
//! - `impostor SOCKET LOG`: plays the daemon on SOCKET (a fresh path, or a
//!   bound socket inherited as descriptor N if SOCKET is `fd:N`, which it
//!   then listens on): welcomes every hello and appends everything clients
//!   send to LOG.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kepler_e2e::wire::RawConnection;
use kepler_protocol::{
    BincodeCodec, ClientMessage, ConfigRef, Event, Hello, HelloReply, LogRange, Request, Response,
    ServerMessage, StartMode,
};
use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use tokio_util::codec::Encoder;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let number = |i: usize| arg(i).parse::<usize>().unwrap_or_else(|_| usage());
    match arg(0).as_str() {
        "hold" => hold(&arg(1), number(2)),
        "follow" => follow(&arg(1), &arg(2), number(3), number(4)),
        "start-env" => start_env(&arg(1), &arg(2), number(3), number(4)),
        "impostor" => impostor(&arg(1), &arg(2)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: hostile_client hold SOCKET COUNT | follow SOCKET CONFIG CONNECTIONS \
         PER_CONNECTION | start-env SOCKET CONFIG VARS BYTES | impostor SOCKET|fd:N LOG"
    );
    std::process::exit(2)
}

/// Connects without waiting in the listen backlog: `None` if it is full.
fn connect_now(socket_path: &str) -> Option<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let address = UnixAddr::new(socket_path).expect("socket path");
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &address) {
        Ok(()) => {}
        Err(Errno::EAGAIN) => return None,
        Err(e) => panic!("connect {socket_path}: {e}"),
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    Some(stream)
}

fn frame<T: serde::Serialize>(message: T) -> BytesMut {
    let mut bytes = BytesMut::new();
    BincodeCodec::<(), T>::new()
        .encode(message, &mut bytes)
        .expect("encode");
    bytes
}

/// Reads one frame of `T`, or why not.
fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut UnixStream,
    buffer: &mut BytesMut,
) -> Result<T, &'static str> {
    use tokio_util::codec::Decoder;
    let mut codec = BincodeCodec::<T, ()>::new();
    loop {
        if let Some(item) = codec.decode(buffer).map_err(|_| "garbage")? {
            return Ok(item);
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed"),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("stalled")
            }
            Err(_) => return Err("closed"),
        }
    }
}

/// Our hello; `HOSTILE_PROTOCOL` sets its protocol number, to hold
/// connections on a daemon of another version (e.g. to show an attack
/// worked before a fix).
fn hello() -> Hello {
    let mut hello = Hello::current();
    if let Some(protocol) = std::env::var("HOSTILE_PROTOCOL")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        hello.protocol = protocol;
    }
    hello
}

fn wait_for_stdin_to_close() {
    let _ = io::stdin().read_to_end(&mut Vec::new());
}

fn hold(socket_path: &str, count: usize) {
    // As many descriptors as this user may have, like an attacker would.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let (mut welcomed, mut refused, mut closed, mut stalled) = (0, 0, 0, 0);
    let mut reason = String::new();
    let mut held = Vec::new();
    for _ in 0..count {
        let Some(mut stream) = connect_now(socket_path) else {
            stalled += 1;
            continue;
        };
        if stream.write_all(&frame(hello())).is_err() {
            closed += 1;
            continue;
        }
        match read_frame::<HelloReply>(&mut stream, &mut BytesMut::new()) {
            Ok(HelloReply::Welcome { .. }) => {
                welcomed += 1;
                held.push(stream);
            }
            Ok(HelloReply::Refused { reason: why }) => {
                refused += 1;
                if reason.is_empty() {
                    reason = why;
                }
            }
            Err("stalled") => {
                stalled += 1;
                held.push(stream);
            }
            Err(_) => closed += 1,
        }
    }
    println!(
        "welcomed={welcomed} refused={refused} closed={closed} stalled={stalled} reason={reason}"
    );
    wait_for_stdin_to_close();
    drop(held);
}

fn follow(socket_path: &str, config: &str, connections: usize, per_connection: usize) {
    let mut streams = Vec::new();
    for _ in 0..connections {
        let mut connection = RawConnection::connect(socket_path.as_ref()).expect("connect");
        match connection.hello().expect("hello") {
            HelloReply::Welcome { .. } => {}
            HelloReply::Refused { reason } => panic!("refused: {reason}"),
        }
        streams.push(connection);
    }
    for connection in &mut streams {
        for id in 0..per_connection as u64 {
            let request = Request::Logs {
                config: ConfigRef {
                    path: PathBuf::from(config),
                },
                services: Vec::new(),
                range: LogRange::All,
                include_hooks: true,
                follow: true,
                filter: Default::default(),
            };
            connection
                .send(ClientMessage { id, request })
                .expect("send a follow");
        }
    }
    // Each request's first message says which it was: a served follow sends
    // the stored line, a refused one its error.
    let (mut served, mut refused) = (0, 0);
    let mut reason = String::new();
    for connection in &mut streams {
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < per_connection {
            match connection.receive::<ServerMessage>() {
                Ok(Some(ServerMessage::Event {
                    id,
                    event: Event::Logs(_),
                })) => {
                    if answered.insert(id) {
                        served += 1;
                    }
                }
                Ok(Some(ServerMessage::Response {
                    id,
                    response: Response::Error { message, .. },
                })) => {
                    if answered.insert(id) {
                        refused += 1;
                        if reason.is_empty() {
                            reason = message;
                        }
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    println!("served={served} refused={refused} reason={reason}");
    wait_for_stdin_to_close();
    drop(streams);
}

fn start_env(socket_path: &str, config: &str, vars: usize, bytes: usize) {
    let sys_env: BTreeMap<String, String> = (0..vars)
        .map(|i| (format!("HOSTILE_{i}"), "x".repeat(bytes)))
        .collect();
    let mut connection = RawConnection::connect(socket_path.as_ref()).expect("connect");
    connection.hello().expect("hello");
    let request = Request::Start {
        config: ConfigRef {
            path: PathBuf::from(config),
        },
        sys_env,
        services: Vec::new(),
        mode: StartMode::Detached,
    };
    match connection.request(1, request) {
        Ok(Response::Error { kind, message }) => println!("error={kind:?} reason={message}"),
        Ok(other) => println!("error=none reason={other:?}"),
        Err(e) => println!("error=connection reason={e}"),
    }
}

fn impostor(socket_path: &str, log: &str) {
    let listener = if let Some(fd) = socket_path.strip_prefix("fd:") {
        let fd: i32 = fd.parse().unwrap_or_else(|_| usage());
        // SAFETY: the test hands us a bound socket as this descriptor and
        // nothing else in this process uses it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Listening here, not in the test, makes this process the one the
        // kernel names as the peer.
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(16).expect("backlog"))
            .expect("listen");
        UnixListener::from(fd)
    } else {
        UnixListener::bind(socket_path).expect("bind")
    };
    println!("listening=1");
    let started = Instant::now();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buffer = BytesMut::new();
        if let Ok(hello) = read_frame::<Hello>(&mut stream, &mut buffer) {
            let _ = writeln!(log, "hello {hello:?}");
            let welcome = HelloReply::Welcome {
                protocol: hello.protocol,
                version: hello.version,
            };
            let _ = stream.write_all(&frame(welcome));
            while let Ok(message) = read_frame::<ClientMessage>(&mut stream, &mut buffer) {
                let _ = writeln!(log, "request {message:?}");
            }
        } else if !buffer.is_empty() {
            let _ = writeln!(log, "bytes {:?}", &buffer[..]);
        }
        let _ = writeln!(log, "connection closed after {:?}", started.elapsed());
    }
}
