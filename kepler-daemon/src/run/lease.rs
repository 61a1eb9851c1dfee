//! Which configs an active `kepler run` holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kepler_protocol::ErrorKind;
use tokio::sync::watch;

use crate::config_actor::ActorError;

/// The configs held by runs, shared by every handler of the daemon.
#[derive(Clone)]
pub struct RunLeases {
    inner: Arc<Inner>,
}

struct Inner {
    /// Config path -> pid of the `kepler run` that holds it.
    held: Mutex<HashMap<PathBuf, i32>>,
    /// How many runs are active, for a shutdown that waits for them.
    active: watch::Sender<usize>,
}

/// A config held by one run; dropping it lets the config go.
pub struct RunLease {
    inner: Arc<Inner>,
    path: PathBuf,
}

impl Default for RunLeases {
    fn default() -> Self {
        RunLeases {
            inner: Arc::new(Inner {
                held: Mutex::new(HashMap::new()),
                active: watch::channel(0).0,
            }),
        }
    }
}

impl RunLeases {
    /// Holds `path` for a run started by process `pid`; refused while
    /// another run holds it.
    pub fn claim(&self, path: &Path, pid: i32) -> Result<RunLease, ActorError> {
        let mut held = self.inner.lock();
        if let Some(holder) = held.get(path) {
            return Err(ActorError::new(
                ErrorKind::Conflict,
                format!(
                    "a `kepler run` of {} is already active (started by pid {holder}); wait \
                     for it to end, or end it with `kepler -f {} stop`",
                    path.display(),
                    path.display()
                ),
            ));
        }
        held.insert(path.to_path_buf(), pid);
        self.inner.active.send_replace(held.len());
        Ok(RunLease {
            inner: self.inner.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Refuses `verb` on a config that a run holds: the run owns its
    /// lifetime and removes its state when its services end.
    pub fn refuse_if_held(&self, path: &Path, verb: &str) -> Result<(), ActorError> {
        let Some(holder) = self.inner.lock().get(path).copied() else {
            return Ok(());
        };
        Err(ActorError::new(
            ErrorKind::Conflict,
            format!(
                "cannot {verb} {}: an active `kepler run` (pid {holder}) holds it and removes \
                 its state once its services have ended; wait for it, or end it with \
                 `kepler -f {} stop`",
                path.display(),
                path.display()
            ),
        ))
    }

    pub fn holds(&self, path: &Path) -> bool {
        self.inner.lock().contains_key(path)
    }

    /// Waits until no run is active, at most `limit` (daemon shutdown).
    pub async fn wait_all_ended(&self, limit: Duration) {
        let mut active = self.inner.active.subscribe();
        let _ = tokio::time::timeout(limit, active.wait_for(|n| *n == 0)).await;
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, i32>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        let mut held = self.inner.lock();
        held.remove(&self.path);
        self.inner.active.send_replace(held.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_held_by_one_run_at_a_time_until_its_lease_drops() {
        let leases = RunLeases::default();
        let path = Path::new("/srv/app/kepler.yaml");
        let lease = leases.claim(path, 42).unwrap();
        let refused = leases.claim(path, 43).err().unwrap();
        assert_eq!(refused.kind, ErrorKind::Conflict);
        assert!(refused
            .message
            .contains("already active (started by pid 42)"));
        let start = leases.refuse_if_held(path, "start").unwrap_err();
        assert!(start
            .message
            .starts_with("cannot start /srv/app/kepler.yaml"));
        assert!(leases.claim(Path::new("/srv/other.yaml"), 44).is_ok());
        drop(lease);
        assert!(!leases.holds(path));
        assert!(leases.refuse_if_held(path, "start").is_ok());
        assert!(leases.claim(path, 45).is_ok());
    }
}
