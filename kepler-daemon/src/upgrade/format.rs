//! The hand-over: what a daemon passes to the binary it `execve`s into, in
//! a memfd whose number is given with `--resume`.
//!
//! The memfd holds a one-line header, then a JSON body:
//!
//! ```text
//! KEPLER-HANDOVER <version> <listener fd> <lock dir fd> <pid file fd> <body length>\n
//! {"version":1,"configs":[...],...}
//! ```
//!
//! The header carries what the new daemon needs even when the body cannot
//! be read (the socket with its queued clients, the single-instance lock):
//! then it falls back to crash recovery instead of losing the socket.
//! Descriptors are numbers in this process: `execve` keeps every one that is
//! not close-on-exec.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use kepler_protocol::ServiceStatus;
use serde::{Deserialize, Serialize};

/// The format this daemon writes.
pub const HANDOVER_VERSION: u32 = 1;
/// The formats this daemon can resume from (its own and older ones).
pub const READABLE_VERSIONS: &[u32] = &[1];

const MAGIC: &str = "KEPLER-HANDOVER";
/// A hand-over is a few hundred bytes per service; this bounds a bad length.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// The descriptors that survive even a body that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Essentials {
    pub version: u32,
    pub listener: RawFd,
    pub lock_dir: RawFd,
    pub pid_file: RawFd,
}

/// Everything the new daemon resumes from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Handover {
    pub version: u32,
    /// The version string of the daemon that wrote it (for its log).
    pub written_by: String,
    /// How long the daemon had been up, so `daemon status` carries on.
    pub daemon_up_ms: u64,
    pub configs: Vec<ConfigHandover>,
    /// Other listening sockets by name (e.g. a metrics endpoint).
    #[serde(default)]
    pub listeners: BTreeMap<String, RawFd>,
    /// Client connections the daemon had welcomed and answered everything
    /// on: the new daemon serves their next request.
    #[serde(default)]
    pub connections: Vec<ConnectionHandover>,
}

/// A welcomed client connection and the bytes read of its next request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionHandover {
    pub fd: RawFd,
    #[serde(with = "serde_bytes")]
    pub buffered: Vec<u8>,
}

/// One loaded config: its owner and snapshot are in its state directory;
/// this is what only the running daemon knew.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigHandover {
    /// Canonical path of the config file (the registry's key).
    pub path: PathBuf,
    pub owner_uid: u32,
    pub global_init_done: bool,
    pub services: BTreeMap<String, ServiceHandover>,
}

/// One instance's runtime state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceHandover {
    pub status: ServiceStatus,
    pub reason: Option<String>,
    pub pid: Option<i32>,
    /// Its cgroup (cgroup mode).
    pub cgroup: Option<PathBuf>,
    pub start_ticks: Option<u64>,
    /// How long its process had been running.
    pub up_ms: Option<u64>,
    pub restarts: u32,
    pub attempts: u32,
    pub generation: u64,
    pub desired: bool,
    pub backoff_attempt: u32,
    pub was_healthy: bool,
    pub health_failures: Option<u32>,
    pub last_exit: Option<i32>,
    pub init_done: bool,
    /// A scheduled automatic restart, as the time left until it is due.
    pub restart_in_ms: Option<u64>,
    pub stdout: Option<PipeHandover>,
    pub stderr: Option<PipeHandover>,
}

/// A service's output pipe: the read end, and the partial line read from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipeHandover {
    pub fd: RawFd,
    #[serde(with = "serde_bytes")]
    pub carry: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot read the hand-over: {0}")]
    Io(#[from] io::Error),
    #[error("the hand-over header is not one this daemon understands: {0:?}")]
    Header(String),
    #[error("hand-over format {0} cannot be resumed by this daemon (it reads {READABLE:?})")]
    Version(u32),
    #[error("the hand-over body is corrupt: {0}")]
    Body(String),
}

const READABLE: &[u32] = READABLE_VERSIONS;

impl Handover {
    /// Writes the hand-over into a new memfd (not close-on-exec: it is
    /// meant to cross `execve`).
    pub fn write_memfd(&self, essentials: Essentials) -> io::Result<OwnedFd> {
        let body = serde_json::to_vec(self).map_err(io::Error::other)?;
        let name = CString::new("kepler-handover").expect("no NUL");
        let fd = nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::empty())
            .map_err(io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        writeln!(
            file,
            "{MAGIC} {} {} {} {} {}",
            self.version,
            essentials.listener,
            essentials.lock_dir,
            essentials.pid_file,
            body.len()
        )?;
        file.write_all(&body)?;
        file.rewind()?;
        Ok(OwnedFd::from(file))
    }
}

/// Reads the header of the hand-over in `fd` (taking ownership of it),
/// then its body. The header's descriptors are returned even when the body
/// cannot be read, with why.
pub fn read_memfd(
    fd: RawFd,
) -> Result<(Essentials, Result<Handover, HandoverError>), HandoverError> {
    if fd < 3 {
        return Err(HandoverError::Header(format!("descriptor {fd}")));
    }
    // SAFETY: the previous daemon passed this descriptor to us with
    // `--resume`; nothing else in this process uses it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Read from the start whatever offset the writer left.
    file.rewind()?;
    let mut contents = Vec::new();
    Read::by_ref(&mut file)
        .take(MAX_BODY as u64 + 4096)
        .read_to_end(&mut contents)?;
    let newline = contents
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| HandoverError::Header("no header line".into()))?;
    let header = String::from_utf8_lossy(&contents[..newline]).into_owned();
    let fields: Vec<&str> = header.split(' ').collect();
    let number = |i: usize| -> Result<i64, HandoverError> {
        fields
            .get(i)
            .and_then(|f| f.parse::<i64>().ok())
            .ok_or_else(|| HandoverError::Header(header.clone()))
    };
    if fields.len() != 6 || fields[0] != MAGIC {
        return Err(HandoverError::Header(header));
    }
    let fd_at = |i: usize| -> Result<RawFd, HandoverError> {
        let n = number(i)?;
        (3..=i64::from(i32::MAX))
            .contains(&n)
            .then_some(n as RawFd)
            .ok_or_else(|| HandoverError::Header(header.clone()))
    };
    let essentials = Essentials {
        version: u32::try_from(number(1)?).map_err(|_| HandoverError::Header(header.clone()))?,
        listener: fd_at(2)?,
        lock_dir: fd_at(3)?,
        pid_file: fd_at(4)?,
    };
    let length = number(5)? as usize;
    let body = &contents[newline + 1..];
    let handover = if !READABLE_VERSIONS.contains(&essentials.version) {
        Err(HandoverError::Version(essentials.version))
    } else if body.len() != length {
        Err(HandoverError::Body(format!(
            "{} bytes where the header announced {length}",
            body.len()
        )))
    } else {
        decode_body(essentials.version, body)
    };
    Ok((essentials, handover))
}

/// Decodes a body of format `version`. An older format is read into the
/// current structs here, field by field, when one exists.
fn decode_body(version: u32, body: &[u8]) -> Result<Handover, HandoverError> {
    match version {
        1 => {
            let handover: Handover =
                serde_json::from_slice(body).map_err(|e| HandoverError::Body(e.to_string()))?;
            if handover.version != version {
                return Err(HandoverError::Body(format!(
                    "body says format {} but the header {version}",
                    handover.version
                )));
            }
            Ok(handover)
        }
        other => Err(HandoverError::Version(other)),
    }
}

/// What `kepler-daemon --handover-check` prints: the formats it resumes.
pub fn check_line() -> String {
    let versions: Vec<String> = READABLE_VERSIONS.iter().map(u32::to_string).collect();
    format!("kepler-handover {}", versions.join(" "))
}

/// Whether a `--handover-check` answer says the binary resumes `version`.
pub fn check_accepts(answer: &str, version: u32) -> bool {
    answer.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("kepler-handover")
            && words.any(|w| w.parse::<u32>().ok() == Some(version))
    })
}

/// Clears close-on-exec so `fd` survives `execve`.
pub fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?;
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.remove(FdFlag::FD_CLOEXEC);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Marks `fd` close-on-exec again (a resumed daemon's own descriptors, so
/// services and hooks never inherit them).
pub fn close_on_exec(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handover {
        let mut services = BTreeMap::new();
        services.insert(
            "web".to_string(),
            ServiceHandover {
                status: ServiceStatus::Running,
                reason: None,
                pid: Some(1234),
                cgroup: None,
                start_ticks: Some(99),
                up_ms: Some(5000),
                restarts: 3,
                attempts: 1,
                generation: 7,
                desired: true,
                backoff_attempt: 0,
                was_healthy: true,
                health_failures: Some(2),
                last_exit: None,
                init_done: true,
                restart_in_ms: None,
                stdout: Some(PipeHandover {
                    fd: 12,
                    carry: b"partial".to_vec(),
                }),
                stderr: None,
            },
        );
        Handover {
            version: HANDOVER_VERSION,
            written_by: "test".into(),
            daemon_up_ms: 10,
            configs: vec![ConfigHandover {
                path: "/srv/kepler.yaml".into(),
                owner_uid: 0,
                global_init_done: true,
                services,
            }],
            listeners: BTreeMap::new(),
            connections: Vec::new(),
        }
    }

    const ESSENTIALS: Essentials = Essentials {
        version: HANDOVER_VERSION,
        listener: 5,
        lock_dir: 6,
        pid_file: 7,
    };

    #[test]
    fn a_handover_reads_back_as_written() {
        let fd = sample().write_memfd(ESSENTIALS).unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let (essentials, body) = read_memfd(raw).unwrap();
        assert_eq!(essentials, ESSENTIALS);
        let body = body.unwrap();
        let web = &body.configs[0].services["web"];
        assert_eq!(web.pid, Some(1234));
        assert_eq!(web.health_failures, Some(2));
        assert_eq!(web.stdout.as_ref().unwrap().carry, b"partial");
    }

    #[test]
    fn a_corrupt_body_keeps_the_essentials() {
        let fd = sample().write_memfd(ESSENTIALS).unwrap();
        let mut file = std::fs::File::from(fd);
        file.seek(io::SeekFrom::End(-10)).unwrap();
        file.write_all(b"@@@@@@@@@@").unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(file);
        let (essentials, body) = read_memfd(raw).unwrap();
        assert_eq!(essentials.listener, 5);
        assert!(matches!(body, Err(HandoverError::Body(_))), "{body:?}");
    }

    #[test]
    fn an_unknown_version_is_refused_not_guessed() {
        let mut handover = sample();
        handover.version = 99;
        let fd = handover
            .write_memfd(Essentials {
                version: 99,
                ..ESSENTIALS
            })
            .unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let (_, body) = read_memfd(raw).unwrap();
        assert!(matches!(body, Err(HandoverError::Version(99))));
    }

    #[test]
    fn the_check_line_names_every_readable_version() {
        assert!(check_accepts(&check_line(), HANDOVER_VERSION));
        assert!(!check_accepts("kepler-handover 2 3", 1));
        assert!(!check_accepts("something else 1", 1));
    }
}
