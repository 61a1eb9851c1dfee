//! Daemon lifecycle: serving, and the ordered graceful shutdown.
//!
//! Shutdown is two explicit signals: `shutdown` (stop taking new work, stop
//! every service through its normal path) and then `closing_connections`
//! (answer what is in flight, flush, close). The socket and pid file are
//! removed last, so a client that sees them gone knows the daemon is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::orchestrator::{modes, StopIntentRequest};
use crate::registry::Registry;
use crate::run::RunLeases;
use crate::server::{self, ConnectionLimits};
use crate::state::StopIntent;
use crate::state_dir::StateDir;

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
        Arc::new(Daemon {
            registry: Registry::new(state_dir.configs().clone()),
            runs: RunLeases::default(),
            state_dir,
            started: Instant::now(),
            shutdown: watch::channel(false).0,
            closing: watch::channel(false).0,
            connection_limits: limits,
            connections: AtomicUsize::new(0),
        })
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
    // Before anyone can see the daemon as ready: a SIGTERM sent right after
    // readiness must shut it down cleanly, not kill it.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    daemon.registry.rediscover();
    let server = tokio::spawn(server::serve(listener, daemon.clone()));
    ready();
    tracing::info!(
        pid = std::process::id(),
        state_dir = %daemon.state_dir().root().display(),
        "kepler daemon ready"
    );

    let mut shutdown = daemon.shutdown.subscribe();
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT received, shutting down"),
        _ = raised(&mut shutdown) => tracing::info!("shutdown requested"),
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
