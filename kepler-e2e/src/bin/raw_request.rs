//! Sends one request straight over the wire, with a config path exactly as
//! given (no canonicalisation, no checks), as whoever runs it:
//! `raw_request SOCKET ps|start|stop|prune PATH` prints the daemon's answer
//! (`Debug` form) on stdout. Lets the e2e tests play a member who bypasses
//! the CLI: symlinked or `..` paths, FIFOs, paths the CLI would refuse.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kepler_e2e::wire::RawConnection;
use kepler_protocol::{ConfigRef, HelloReply, Request, StartMode};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, verb, path] = args.as_slice() else {
        eprintln!("usage: raw_request SOCKET ps|start|stop|prune PATH");
        std::process::exit(2);
    };
    let config = ConfigRef {
        path: PathBuf::from(path),
    };
    let request = match verb.as_str() {
        "ps" => Request::Ps {
            config: Some(config),
        },
        "start" => Request::Start {
            config,
            sys_env: BTreeMap::new(),
            services: Vec::new(),
            mode: StartMode::Detached,
        },
        "stop" => Request::Stop {
            config,
            services: Vec::new(),
            signal: None,
            clean: false,
        },
        "prune" => Request::Prune {
            force: true,
            dry_run: false,
        },
        other => {
            eprintln!("raw_request: unknown verb {other}");
            std::process::exit(2);
        }
    };
    let mut connection = RawConnection::connect(socket.as_ref()).expect("connect");
    match connection.hello().expect("hello") {
        HelloReply::Welcome { .. } => {}
        HelloReply::Refused { reason } => {
            eprintln!("refused: {reason}");
            std::process::exit(1);
        }
    }
    let response = connection.request(1, request).expect("request");
    println!("{response:?}");
}
