//! Daemon lifecycle: serving, and the ordered graceful shutdown.
//!
//! Shutdown is two explicit signals: `shutdown` (stop taking new work, stop
//! every service through its normal path) and then `closing_connections`
//! (answer what is in flight, flush, close). The socket and pid file are
//! removed last, so a client that sees them gone knows the daemon is done.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::orchestrator::{modes, StopIntentRequest};
use crate::registry::Registry;
use crate::run::RunLeases;
use crate::server::{self, ConnectionLimits};
use crate::state::StopIntent;
use crate::state_dir::StateDir;
use crate::upgrade::{Adoption, UpgradeRequest};

/// How long a shutdown lets `kepler run`s remove their state (their
/// `pre_cleanup` hooks run meanwhile).
const RUNS_CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared daemon-wide context, handed to every connection.
pub struct Daemon {
    state_dir: StateDir,
    registry: Registry,
    runs: RunLeases,
    started: Instant,
    shutdown: watch::Sender<bool>,
    closing: watch::Sender<bool>,
    connection_limits: ConnectionLimits,
    /// Raised when an upgrade hands over: stop serving, end requests.
    upgrading: watch::Sender<bool>,
    /// Raised once every connection has closed after `upgrading`.
    drained: watch::Sender<bool>,
    upgrades: mpsc::UnboundedSender<UpgradeRequest>,
    upgrade_inbox: Mutex<Option<mpsc::UnboundedReceiver<UpgradeRequest>>>,
    /// Welcomed client connections, with the bytes read of their next
    /// request: given up by this daemon for the next one, or handed over by
    /// the previous one for this one.
    handed_connections: Mutex<Vec<(std::os::fd::OwnedFd, Vec<u8>)>>,
    /// Client connections open now, for the metrics endpoint.
    connections: AtomicUsize,
}

/// Counts a connection while it lives.
pub struct OpenConnection(Arc<Daemon>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Daemon {
    pub fn new(state_dir: StateDir) -> Arc<Self> {
        Self::with_connection_limits(state_dir, ConnectionLimits::default())
    }

    /// A daemon with other bounds on connections (tests use short ones).
    pub fn with_connection_limits(state_dir: StateDir, limits: ConnectionLimits) -> Arc<Self> {
        Self::build(state_dir, limits, Duration::ZERO)
    }

    /// A daemon resumed after an upgrade: its uptime carries on from `up`.
    pub fn resumed(state_dir: StateDir, up: Duration) -> Arc<Self> {
        Self::build(state_dir, ConnectionLimits::default(), up)
    }

    fn build(state_dir: StateDir, limits: ConnectionLimits, up: Duration) -> Arc<Self> {
        let (upgrades, inbox) = mpsc::unbounded_channel();
        let now = Instant::now();
        Arc::new(Daemon {
            registry: Registry::new(state_dir.configs().clone()),
            runs: RunLeases::default(),
            state_dir,
            started: now.checked_sub(up).unwrap_or(now),
            shutdown: watch::channel(false).0,
            closing: watch::channel(false).0,
            connection_limits: limits,
            upgrading: watch::channel(false).0,
            drained: watch::channel(false).0,
            upgrades,
            upgrade_inbox: Mutex::new(Some(inbox)),
            handed_connections: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        })
    }

    /// Keeps a welcomed connection for the next daemon (an upgrade).
    pub fn hand_over_connection(&self, stream: tokio::net::UnixStream, buffered: Vec<u8>) {
        match stream.into_std() {
            Ok(stream) => self
                .handed_connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((stream.into(), buffered)),
            Err(e) => tracing::warn!("cannot hand a connection over: {e}"),
        }
    }

    /// Takes the connections kept by [`hand_over_connection`](Self::hand_over_connection)
    /// or [`adopt_connections`](Self::adopt_connections).
    pub fn take_connections(&self) -> Vec<(std::os::fd::OwnedFd, Vec<u8>)> {
        std::mem::take(
            &mut *self
                .handed_connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Connections a previous daemon handed over, to be served first.
    pub fn adopt_connections(&self, connections: Vec<(std::os::fd::OwnedFd, Vec<u8>)>) {
        self.handed_connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(connections);
    }

    /// Passes an upgrade request to the daemon's main loop.
    pub fn request_upgrade(&self, request: UpgradeRequest) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("the daemon is shutting down".into());
        }
        self.upgrades
            .send(request)
            .map_err(|_| "this daemon does not take upgrades".to_string())
    }

    /// Stops serving for a hand-over: the accept loop stops (the socket
    /// stays open) and requests in flight end with `DaemonUpgraded`.
    pub fn begin_upgrade(&self) {
        self.upgrading.send_replace(true);
    }

    /// Flips to true when the daemon hands over to a new binary.
    pub fn upgrading(&self) -> watch::Receiver<bool> {
        self.upgrading.subscribe()
    }

    /// Called by the server once every connection has closed after
    /// [`begin_upgrade`](Self::begin_upgrade).
    pub fn mark_drained(&self) {
        self.drained.send_replace(true);
    }

    /// Waits (at most `limit`) until every connection has closed.
    pub async fn connections_drained(&self, limit: Duration) {
        let mut drained = self.drained.subscribe();
        let _ = tokio::time::timeout(limit, raised(&mut drained)).await;
    }

    /// Counts a client connection until the guard is dropped.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn connection_limits(&self) -> ConnectionLimits {
        self.connection_limits
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state_dir
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The configs that `kepler run`s hold.
    pub fn runs(&self) -> &RunLeases {
        &self.runs
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks the daemon to stop all services and exit (idempotent).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Flips to true when connections should finish and close.
    pub fn closing_connections(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Serves `listener` until SIGTERM, SIGINT or a `Shutdown` request, then stops
/// everything and removes the runtime files. `ready` runs once the daemon
/// accepts connections (used to release `--detach` and notify systemd).
pub async fn run(
    listener: std::os::unix::net::UnixListener,
    daemon: Arc<Daemon>,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    run_adopting(listener, daemon, HashMap::new(), ready).await
}

/// [`run`], taking over the services a previous daemon handed over
/// (`adoptions`, by config path); every other config recovers as after a
/// crash.
pub async fn run_adopting(
    listener: std::os::unix::net::UnixListener,
    daemon: Arc<Daemon>,
    adoptions: HashMap<PathBuf, Adoption>,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    // Before anyone can see the daemon as ready: a SIGTERM sent right after
    // readiness must shut it down cleanly, not kill it.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    listener.set_nonblocking(true)?;
    let listener_fd = listener.as_raw_fd();
    let listener = UnixListener::from_std(listener)?;
    let mut upgrades = daemon
        .upgrade_inbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    daemon.registry.rediscover_adopting(adoptions);
    let server = tokio::spawn(server::serve(listener, daemon.clone()));
    ready();
    tracing::info!(
        pid = std::process::id(),
        state_dir = %daemon.state_dir().root().display(),
        "kepler daemon ready"
    );

    let mut shutdown = daemon.shutdown.subscribe();
    loop {
        let upgrade = async {
            match &mut upgrades {
                Some(inbox) => inbox.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = raised(&mut shutdown) => tracing::info!("shutdown requested"),
            Some(request) = upgrade => {
                // Returns only when the upgrade was refused.
                crate::upgrade::hand_over(&daemon, listener_fd, request).await;
                continue;
            }
        }
        break;
    }
    daemon.request_shutdown();
    stop_all_services(&daemon).await;

    daemon.closing.send_replace(true);
    if let Err(e) = server.await {
        tracing::error!("protocol server ended abnormally: {e}");
    }
    daemon.state_dir().remove_runtime_files();
    tracing::info!("kepler daemon stopped");
    Ok(())
}

/// Stops every service of every config through its normal stop path, all
/// configs in parallel. The services stay wanted, so the next daemon starts
/// them again; those of a `kepler run` do not (a run is not resumed), and
/// its supervisor gets a moment to remove the run's state.
async fn stop_all_services(daemon: &Daemon) {
    let stops = daemon.registry.all().into_iter().map(|handle| async move {
        let intent = if daemon.runs.holds(handle.path()) {
            StopIntent::User
        } else {
            StopIntent::Shutdown
        };
        let request = StopIntentRequest {
            signal: None,
            intent,
        };
        if let Err(e) = modes::stop_config(&handle, Vec::new(), request, false).await {
            tracing::error!(config = %handle.path().display(), "stopping services failed: {e}");
        }
    });
    futures::future::join_all(stops).await;
    daemon.runs.wait_all_ended(RUNS_CLEANUP_TIMEOUT).await;
    // Buffered log lines reach the disk before the daemon exits.
    let stores: Vec<_> = daemon
        .registry
        .all()
        .iter()
        .map(|h| h.logs().clone())
        .collect();
    let _ = tokio::task::spawn_blocking(move || stores.iter().for_each(|s| s.flush())).await;
}

/// Resolves once a boolean signal (shutdown, closing) is raised. Dropping the
/// borrow here keeps callers' futures `Send`.
pub async fn raised(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|raised| *raised).await;
}
