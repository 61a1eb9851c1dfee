//! Giving memory back to the system after bursts of work.
//!
//! Starting or stopping hundreds of services allocates a few MB for a moment
//! (a task and its future per service, state changes, snapshots) and frees
//! it all again: a heap profile of 16 start/stop cycles of 300 services
//! shows the live heap back at the same 1.6 MB after every stop. The
//! daemon's RSS still rose from cycle to cycle, because glibc's malloc keeps
//! freed memory: each thread that allocated gets its own arena, each arena
//! keeps its high-water mark, and pages freed in the middle of a heap are
//! only returned by `malloc_trim`. So the daemon asks for a single arena (the
//! per-thread caches still serve small allocations without locking), and
//! once work has been quiet for a moment after a burst it trims, which
//! returns the free pages of the whole heap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use tokio::sync::Notify;

/// How long the daemon must be quiet after a burst before it trims.
const QUIET: Duration = Duration::from_millis(250);
/// Units of work (actor messages) that make a burst worth a trim.
const BURST: u64 = 64;

/// Use one malloc arena for every thread. Call before any thread starts.
pub fn use_one_arena() {
    // SAFETY: mallopt only changes allocator parameters; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Work done since the last trim, and a wake-up for the trimming task.
static WORK: AtomicU64 = AtomicU64::new(0);
static ACTIVITY: Notify = Notify::const_new();

/// Records `units` of work done; a burst of them is followed by a trim
/// once things are quiet. Call from within the tokio runtime.
pub fn note_work(units: u64) {
    static TRIMMER: Once = Once::new();
    if units == 0 {
        return;
    }
    TRIMMER.call_once(|| {
        tokio::spawn(trim_after_bursts());
    });
    WORK.fetch_add(units, Ordering::Relaxed);
    ACTIVITY.notify_one();
}

async fn trim_after_bursts() {
    loop {
        ACTIVITY.notified().await;
        // Debounce: wait until no work was noted for a while.
        while tokio::time::timeout(QUIET, ACTIVITY.notified())
            .await
            .is_ok()
        {}
        if WORK.swap(0, Ordering::Relaxed) >= BURST {
            // SAFETY: malloc_trim only returns free memory to the system.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}
