//! Processes a test starts beside the daemon (an impostor, a connection
//! holder, a stuck follower) must not outlive it, even when it fails.

use std::process::Child;

/// A helper process the test started; killed and reaped when dropped, so a
/// failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
