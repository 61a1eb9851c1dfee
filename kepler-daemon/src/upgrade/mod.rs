//! Zero-downtime upgrade: the running daemon `execve`s a new binary, which
//! keeps its pid, so its services stay its children and every descriptor
//! that is not close-on-exec stays open.
//!
//! The old daemon, in order: runs the new binary's `--handover-check`
//! (refusing if it cannot read this daemon's format); stops reaping (an
//! exit from now on stays a zombie for the new daemon); asks every config
//! actor for its state, refusing if a service is between states; stops
//! serving (the listening socket stays open, so new clients queue in its
//! backlog) and ends requests in flight with `DaemonUpgraded`; stops every
//! log pump at a line boundary, taking back its pipe and partial line;
//! writes the hand-over ([`format`]) into a memfd and `execve`s the new
//! binary with `--resume <memfd>`. The new daemon's side is [`resume`].

pub mod format;
mod resume;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::daemon::Daemon;
use crate::notify::Notifier;
use crate::process::{self, ExitWaiter, OutputMode, ProcessSpec, ResourceLimits, SpawnOptions};
use format::{ConfigHandover, Essentials, Handover, HANDOVER_VERSION};
pub use resume::{resume_args, Resumed};

/// How long the pre-flight run of the new binary may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each config actor may take to describe its state.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connections get to answer and close before the hand-over.
const CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(5);
/// Test hook: set in the daemon's environment when it starts, the hand-over
/// body is damaged before `execve`, so the fallback can be tested.
pub const CORRUPT_ENV: &str = "KEPLER_TEST_CORRUPT_HANDOVER";
/// Test hook: set in the daemon's environment when it starts to a path,
/// the hand-over creates that file once reaping is paused and every config
/// has described its state, and waits (at most 30 s) until the test
/// removes it, so a test can act at exactly that point.
pub const PAUSE_ENV: &str = "KEPLER_TEST_HANDOVER_PAUSE";

/// What a resumed daemon adopts for one config: its state and the exit
/// waiters of its services' processes.
pub struct Adoption {
    pub state: ConfigHandover,
    pub exits: HashMap<i32, ExitWaiter>,
}

/// What the process was started with, kept for the `execve`.
struct Startup {
    binary: Option<PathBuf>,
    args: Vec<OsString>,
    lock: (RawFd, RawFd),
    notifier: Notifier,
    corrupt: bool,
    pause: Option<PathBuf>,
}

static STARTUP: OnceLock<Startup> = OnceLock::new();

/// The name of the metrics endpoint's socket in a hand-over.
pub const METRICS_LISTENER: &str = "metrics";

/// Listening sockets besides the protocol socket, by name: passed on by an
/// upgrade so the new daemon listens on them without a gap.
static LISTENERS: std::sync::Mutex<BTreeMap<String, RawFd>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Records a listening socket an upgrade must pass on.
pub fn remember_listener(name: &str, fd: RawFd) {
    LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.to_string(), fd);
}

fn extra_listeners() -> BTreeMap<String, RawFd> {
    LISTENERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Records, at start, what an upgrade needs later: the binary's path (what
/// a package upgrade replaces), the arguments, the lock's descriptors and
/// the systemd notifier.
pub fn remember_startup(lock: (RawFd, RawFd), notifier: Notifier) {
    let binary = std::env::current_exe().ok().map(|path| {
        // A replaced binary reads as "<path> (deleted)"; the new file is
        // at <path>.
        let text = path.as_os_str().as_bytes();
        match text.strip_suffix(b" (deleted)") {
            Some(kept) => PathBuf::from(std::ffi::OsStr::from_bytes(kept)),
            None => path,
        }
    });
    let _ = STARTUP.set(Startup {
        binary,
        args: std::env::args_os().skip(1).collect(),
        lock,
        notifier,
        corrupt: std::env::var_os(CORRUPT_ENV).is_some(),
        pause: std::env::var_os(PAUSE_ENV).map(PathBuf::from),
    });
}

/// The daemon's version, as `daemon status` shows it: the package version
/// and the build stamp of this binary, if it has one.
pub fn daemon_version() -> String {
    let stamp = build_stamp();
    if stamp.is_empty() {
        env!("CARGO_PKG_VERSION").to_string()
    } else {
        format!("{}+{stamp}", env!("CARGO_PKG_VERSION"))
    }
}

/// Bytes a release process (or a test) may overwrite in the built binary
/// to tell two builds of the same version apart. Read through `black_box`
/// so the compiler cannot fold it.
#[used]
static BUILD_STAMP: [u8; 64] = *b"KEPLER-BUILD-STAMP:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn build_stamp() -> String {
    let bytes = std::hint::black_box(&BUILD_STAMP);
    let tail = &bytes[b"KEPLER-BUILD-STAMP:".len()..];
    let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end])
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect()
}

/// An upgrade request on its way from the handler to the daemon's loop.
pub struct UpgradeRequest {
    pub binary: Option<PathBuf>,
    /// `Ok(binary)` once the hand-over is certain (the answer is the last
    /// thing the client hears from this process); `Err(why)` if refused.
    pub reply: oneshot::Sender<Result<PathBuf, String>>,
}

/// Carries out an upgrade. Returns only if it was refused (nothing has
/// changed then); otherwise this process image is replaced.
pub async fn hand_over(daemon: &Daemon, listener: RawFd, request: UpgradeRequest) {
    let UpgradeRequest { binary, reply } = request;
    let Some(startup) = STARTUP.get() else {
        let _ = reply.send(Err("this daemon cannot upgrade in place".into()));
        return;
    };
    let Some(binary) = binary.or_else(|| startup.binary.clone()) else {
        let _ = reply.send(Err(
            "cannot tell which binary this daemon was started from; give --binary".into(),
        ));
        return;
    };
    if let Err(why) = preflight(&binary).await {
        tracing::warn!(binary = %binary.display(), "upgrade refused: {why}");
        let _ = reply.send(Err(why));
        return;
    }
    let running_runs = daemon
        .registry()
        .all()
        .iter()
        .filter(|h| daemon.runs().holds(h.path()))
        .map(|h| h.path().display().to_string())
        .collect::<Vec<_>>();
    if !running_runs.is_empty() {
        let _ = reply.send(Err(format!(
            "`kepler run` is in progress for {}; upgrade once it has ended",
            running_runs.join(", ")
        )));
        return;
    }
    if let Err(why) = room_for_held_pipes() {
        tracing::warn!("upgrade refused: {why}");
        let _ = reply.send(Err(why));
        return;
    }
    // From here on exits stay zombies: the new daemon reaps them.
    process::pause_reaping();
    let (states, gos) = match collect_states(daemon).await {
        Ok(collected) => collected,
        Err((why, gos)) => {
            for go in gos {
                let _ = go.send(None);
            }
            process::resume_reaping();
            tracing::warn!("upgrade refused: {why}");
            let _ = reply.send(Err(why));
            return;
        }
    };
    tracing::info!(
        binary = %binary.display(),
        configs = states.len(),
        "handing over to a new daemon binary"
    );
    if let Some(pause) = &startup.pause {
        test_pause(pause).await;
    }
    // Stop accepting before the client hears the answer: its next
    // connection must queue for the new daemon, not reach this one.
    daemon.begin_upgrade();
    let _ = reply.send(Ok(binary.clone()));
    startup.notifier.reloading();
    daemon.connections_drained(CONNECTIONS_TIMEOUT).await;
    crate::logs::begin_handover();
    let mut full = Vec::with_capacity(gos.len());
    for go in gos {
        let (sender, receiver) = oneshot::channel();
        if go.send(Some(sender)).is_ok() {
            full.push(receiver);
        }
    }
    let configs: Vec<ConfigHandover> = futures::future::join_all(full)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let stores: Vec<_> = daemon
        .registry()
        .all()
        .iter()
        .map(|h| h.logs().clone())
        .collect();
    let _ = tokio::task::spawn_blocking(move || stores.iter().for_each(|s| s.flush())).await;
    let connections = daemon
        .take_connections()
        .into_iter()
        .map(|(fd, buffered)| format::ConnectionHandover {
            fd: fd.into_raw_fd(),
            buffered,
        })
        .collect();
    let handover = Handover {
        version: HANDOVER_VERSION,
        written_by: daemon_version(),
        daemon_up_ms: daemon.uptime().as_millis() as u64,
        configs,
        listeners: extra_listeners(),
        connections,
    };
    exec(startup, &binary, listener, &handover);
}

/// Asks every config actor for its state; on a refusal, the reasons and
/// the actors to release.
#[allow(clippy::type_complexity)]
async fn collect_states(
    daemon: &Daemon,
) -> Result<
    (
        Vec<ConfigHandover>,
        Vec<oneshot::Sender<Option<oneshot::Sender<ConfigHandover>>>>,
    ),
    (
        String,
        Vec<oneshot::Sender<Option<oneshot::Sender<ConfigHandover>>>>,
    ),
> {
    let mut gos = Vec::new();
    let mut answers = Vec::new();
    for handle in daemon.registry().all() {
        let (go, wait) = oneshot::channel();
        if let Some(answer) = handle.handover(wait) {
            gos.push(go);
            answers.push((handle.path().to_path_buf(), answer));
        }
    }
    let mut states = Vec::new();
    let mut refusals = Vec::new();
    for (path, answer) in answers {
        match tokio::time::timeout(ACTOR_TIMEOUT, answer).await {
            Ok(Ok(Ok(state))) => states.push(state),
            Ok(Ok(Err(why))) => refusals.push(why),
            Ok(Err(_)) => {} // the actor ended: nothing of it to hand over
            Err(_) => refusals.push(format!("{} did not answer in time", path.display())),
        }
    }
    if refusals.is_empty() {
        Ok((states, gos))
    } else {
        Err((format!("cannot upgrade now: {}", refusals.join("; ")), gos))
    }
}

/// Runs `binary --handover-check` and checks that it resumes this
/// daemon's hand-over format.
/// Pipes held by io_uring become descriptors again for the exec (which
/// keeps descriptors, not rings): refused unless the open-file limit has
/// room for all of them, with a margin for what the hand-over opens.
fn room_for_held_pipes() -> Result<(), String> {
    const MARGIN: u64 = 64;
    let held = crate::logs::held::count();
    if held == 0 {
        return Ok(());
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64);
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    if open + held + MARGIN <= limit {
        return Ok(());
    }
    Err(format!(
        "{held} service output pipes are held in io_uring and must become descriptors for \
         the hand-over, but only {} of the daemon's open-file limit {limit} are free; raise \
         the daemon's open-file limit (LimitNOFILE= in its unit) and restart it, or upgrade \
         with fewer services running",
        limit.saturating_sub(open)
    ))
}

async fn preflight(binary: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(binary).map_err(|e| format!("cannot use {}: {e}", binary.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", binary.display()));
    }
    let spec = ProcessSpec {
        argv: vec![
            binary.to_string_lossy().into_owned(),
            "--handover-check".into(),
        ],
        env: [("PATH".to_string(), process::DEFAULT_SEARCH_PATH.to_string())].into(),
        working_dir: "/".into(),
        user: None,
        limits: ResourceLimits::default(),
        umask: 0o022,
        stdout: OutputMode::Pipe,
        stderr: OutputMode::Pipe,
    };
    let options = SpawnOptions {
        stdin_pipe: false,
        die_with_daemon: true,
    };
    let spawned = process::spawn_with(&spec, options)
        .map_err(|e| format!("pre-flight of {} failed: {e}", binary.display()))?;
    let pgid = spawned.pid;
    let work = async move {
        let (answer, errors) = tokio::join!(
            crate::unprivileged_bake::read_bounded(spawned.stdout, 4096, pgid),
            crate::unprivileged_bake::read_bounded(spawned.stderr, 4096, pgid),
        );
        (spawned.exit.await, answer.0, errors.0)
    };
    let outcome = tokio::time::timeout(PREFLIGHT_TIMEOUT, work).await;
    process::reap_leftovers(pgid).await;
    let (status, answer, errors) = outcome.map_err(|_| {
        format!(
            "pre-flight of {} took longer than {PREFLIGHT_TIMEOUT:?}",
            binary.display()
        )
    })?;
    let answer = String::from_utf8_lossy(&answer);
    if !status.success() {
        let errors = String::from_utf8_lossy(&errors);
        return Err(format!(
            "pre-flight of {} failed ({status}){}; nothing was changed",
            binary.display(),
            if errors.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", errors.trim())
            }
        ));
    }
    if !format::check_accepts(&answer, HANDOVER_VERSION) {
        return Err(format!(
            "{} cannot resume this daemon's hand-over (format {HANDOVER_VERSION}; it answered \
             {:?}); nothing was changed",
            binary.display(),
            answer.trim()
        ));
    }
    Ok(())
}

/// Writes the hand-over, keeps the descriptors it names open across
/// `execve`, and replaces this process with `binary`. Never returns: if
/// `binary` cannot be executed, this daemon's own binary resumes instead;
/// if that fails too, the process exits and the next start recovers.
fn exec(startup: &Startup, binary: &Path, listener: RawFd, handover: &Handover) -> ! {
    // Removals still queued would be forgotten by the new daemon.
    if crate::containment::current().tree().is_some() {
        crate::containment::removal::drain();
    }
    let essentials = Essentials {
        version: HANDOVER_VERSION,
        listener,
        lock_dir: startup.lock.0,
        pid_file: startup.lock.1,
    };
    let memfd = match handover.write_memfd(essentials) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("cannot write the hand-over: {e}; exiting so the next start recovers");
            std::process::exit(70);
        }
    };
    if startup.corrupt {
        corrupt(&memfd);
    }
    let mut keep = vec![listener, startup.lock.0, startup.lock.1, memfd.as_raw_fd()];
    for config in &handover.configs {
        for service in config.services.values() {
            keep.extend(
                [&service.stdout, &service.stderr]
                    .into_iter()
                    .flatten()
                    .map(|p| p.fd),
            );
        }
    }
    keep.extend(handover.listeners.values().copied());
    keep.extend(handover.connections.iter().map(|c| c.fd));
    for fd in keep {
        if let Err(e) = format::keep_across_exec(fd) {
            tracing::error!(fd, "cannot keep a descriptor across execve: {e}");
        }
    }
    let memfd = memfd.into_raw_fd();
    let env = environment(&startup.notifier);
    // The new program raises the open-file limit again and must remember
    // the original, which services inherit.
    if let Some(soft) = process::original_fd_limit() {
        if let Ok((_, hard)) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                soft,
                hard,
            );
        }
    }
    // Likewise the niceness: the new program raises itself again from the
    // one services run at. Linux keeps it per thread; this one execs.
    process::priority::drop_back();
    let mut tried = vec![binary.to_path_buf()];
    if let Some(own) = &startup.binary {
        if own != binary {
            tried.push(own.clone());
        }
    }
    for program in tried {
        let args = exec_args(&program, memfd, &startup.args);
        let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
            continue;
        };
        let error = nix::unistd::execve(&path, &args, &env).unwrap_err();
        tracing::error!(binary = %program.display(), "cannot execute: {error}");
    }
    tracing::error!("no binary could resume the hand-over; exiting so the next start recovers");
    std::process::exit(70);
}

/// `<binary> --resume <fd> <the daemon's own arguments>`, without an
/// earlier `--resume` and without `--detach` (it is detached already).
fn exec_args(binary: &Path, memfd: RawFd, original: &[OsString]) -> Vec<CString> {
    let mut args = vec![
        binary.as_os_str().to_os_string(),
        "--resume".into(),
        memfd.to_string().into(),
    ];
    let mut skip_value = false;
    for arg in original {
        if skip_value {
            skip_value = false;
            continue;
        }
        if arg == "--resume" {
            skip_value = true;
            continue;
        }
        if arg == "--detach" || arg.as_bytes().starts_with(b"--resume=") {
            continue;
        }
        args.push(arg.clone());
    }
    args.into_iter()
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect()
}

/// The environment for the new binary: this one's, and the systemd notify
/// socket that was taken out of it at start.
fn environment(notifier: &Notifier) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != crate::notify::NOTIFY_SOCKET_ENV)
        .filter_map(|(key, value)| {
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend(value.into_vec());
            CString::new(pair).ok()
        })
        .collect();
    if let Some(value) = notifier.socket_value() {
        let mut pair = crate::notify::NOTIFY_SOCKET_ENV.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend(value.as_bytes());
        if let Ok(pair) = CString::new(pair) {
            env.push(pair);
        }
    }
    env
}

/// The pause test hook (see [`PAUSE_ENV`]). It polls: it exists for tests
/// only, and a test removes the file at a moment of its choosing.
async fn test_pause(path: &Path) {
    tracing::warn!(path = %path.display(), "{PAUSE_ENV} is set: pausing the hand-over");
    if let Err(e) = std::fs::write(path, b"paused\n") {
        tracing::error!("cannot create {}: {e}", path.display());
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while path.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The test hook: overwrites the end of the body so it cannot be parsed.
fn corrupt(memfd: &std::os::fd::OwnedFd) {
    use std::io::{Seek, SeekFrom, Write};
    let Ok(fd) = memfd.try_clone() else { return };
    let mut file = std::fs::File::from(fd);
    tracing::warn!("{CORRUPT_ENV} is set: damaging the hand-over on purpose");
    let _ = file.seek(SeekFrom::End(-16));
    let _ = file.write_all(b"\0corrupted-here\0");
    let _ = file.rewind();
}
