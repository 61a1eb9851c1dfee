//! Threads that run one current-thread tokio runtime each, for work that
//! must not share the request runtime's turns (log pumping, health probes).

use tokio::runtime::Handle;

/// Starts a thread named `name` driving a runtime of its own and returns a
/// handle to spawn on it; `None` (with a warning) if the runtime or the
/// thread could not be made, so callers can fall back to their own runtime.
pub fn start(name: &str) -> Option<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| tracing::warn!("cannot build the runtime of {name}: {e}"))
        .ok()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| tracing::warn!("cannot start thread {name}: {e}"))
        .ok()?;
    Some(handle)
}
