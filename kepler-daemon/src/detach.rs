//! `kepler-daemon --detach`: fork into the background once the socket is bound.
//!
//! Everything that can fail at start-up (root check, state dir, lock, bind)
//! happens before the fork, with stderr still on the caller's terminal. The
//! parent then waits until the child reports readiness over a pipe, so
//! `kepler daemon start -d && kepler start` never races the socket.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::{dup2, fork, pipe, setsid, ForkResult};

use crate::state_dir::StateDir;

/// Held by the detached child; writing to it releases the waiting parent.
pub struct ReadyPipe(OwnedFd);

impl ReadyPipe {
    pub fn signal(self) {
        let mut file = std::fs::File::from(self.0);
        let _ = file.write_all(b"R");
    }
}

/// Forks. The parent never returns: it exits 0 once the child is ready, or 1
/// (after showing the end of the daemon log) if the child died first. The child
/// returns in a new session with its output going to `daemon.log`, which is
/// opened (and checked) before the fork, so a planted FIFO cannot hang it.
///
/// Must be called before any thread is started.
pub fn daemonize(state: &StateDir) -> io::Result<ReadyPipe> {
    let log = state.open_daemon_log().map_err(io::Error::other)?;
    let (read_end, write_end) = pipe()?;
    // SAFETY: called from `main` before the tokio runtime or any other thread
    // exists, so the child starts from a consistent single-threaded state.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(write_end);
            let mut ready = [0u8; 1];
            let mut pipe = std::fs::File::from(read_end);
            if matches!(pipe.read(&mut ready), Ok(1)) {
                std::process::exit(0);
            }
            eprintln!(
                "kepler-daemon (pid {child}) exited during start-up; its log {}:",
                state.daemon_log_path().display()
            );
            for line in state.daemon_log_tail(20) {
                eprintln!("  {line}");
            }
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(read_end);
            setsid()?;
            let null = OpenOptions::new().read(true).open("/dev/null")?;
            dup2(null.as_raw_fd(), 0)?;
            dup2(log.as_raw_fd(), 1)?;
            dup2(log.as_raw_fd(), 2)?;
            Ok(ReadyPipe(write_end))
        }
    }
}
