//! The daemon's allocator, and giving memory back after bursts of work.
//!
//! Starting or stopping hundreds of services allocates a few MB for a moment
//! (a task and its future per service, state changes, snapshots) and frees
//! it all again: a heap profile of 16 start/stop cycles of 300 services
//! shows the live heap back at the same 1.6 MB after every stop.
//!
//! The daemon allocates with mimalloc (set in `main.rs`). glibc's malloc kept
//! a high-water mark per thread arena, which made RSS climb from cycle to
//! cycle; with a single arena instead, every allocation its per-thread cache
//! could not serve took one process-wide lock, and at 10,000 services the log
//! thread and the runtime's workers spent a tenth of a stop waiting on each
//! other there. mimalloc gives each thread a heap of its own, a free from
//! another thread needs no lock, and it returns emptied pages to the system
//! itself. Two things are still done here: mimalloc is told not to reserve
//! address space in arenas ahead ([`configure_allocator`]; with its default
//! gigabyte, or even 16 MiB, the daemon's RSS with 10,000 services was about
//! 135 MB against 88 MB without), and once work has been quiet for a moment
//! after a burst the daemon asks it to collect what it still holds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the daemon must be quiet after a burst before it asks the allocator to collect.
const QUIET: Duration = Duration::from_millis(250);
/// Units of work (actor messages) that make a burst worth a collect.
const BURST: u64 = 64;

/// mimalloc's `arena_reserve` option: its number in the `mi_option_e` of the
/// mimalloc that libmimalloc-sys 0.1.49 builds (pinned in Cargo.toml), whose
/// Rust constants stop short of it.
const ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;

/// Sets mimalloc's options. Call before anything is allocated (from a
/// constructor: Rust's runtime allocates before `main`), as the first
/// allocation reserves the first arena.
pub fn configure_allocator() {
    // SAFETY: mi_option_set only stores the value; 0 means "reserve no arena
    // ahead", and memory comes from the system as it is needed.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_RESERVE, 0) };
}

/// Work done since the last collect, when the last of it was noted, and
/// whether a task is waiting for the quiet after it.
static WORK: AtomicU64 = AtomicU64::new(0);
static LAST_WORK_MS: AtomicU64 = AtomicU64::new(0);
static WAITING: AtomicBool = AtomicBool::new(false);

/// Milliseconds since the first call: a clock for "how long ago".
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Records `units` of work done; a burst of them is followed by a collect
/// once things are quiet. Cheap: two atomics, and a task started once per
/// burst, not per unit. Call from within the tokio runtime.
pub fn note_work(units: u64) {
    if units == 0 {
        return;
    }
    WORK.fetch_add(units, Ordering::Relaxed);
    LAST_WORK_MS.store(now_ms(), Ordering::Relaxed);
    if !WAITING.swap(true, Ordering::AcqRel) {
        tokio::spawn(collect_when_quiet());
    }
}

async fn collect_when_quiet() {
    let quiet = QUIET.as_millis() as u64;
    loop {
        let since = now_ms().saturating_sub(LAST_WORK_MS.load(Ordering::Relaxed));
        if since >= quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(quiet - since)).await;
    }
    // Work noted from here on starts the next wait.
    WAITING.store(false, Ordering::Release);
    if WORK.swap(0, Ordering::Relaxed) >= BURST {
        // SAFETY: mi_collect only frees what the allocator holds unused.
        let _ = tokio::task::spawn_blocking(|| unsafe { libmimalloc_sys::mi_collect(true) }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arena_reserve_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_ARENA_RESERVE").is_some() {
            eprintln!("SKIP: MIMALLOC_ARENA_RESERVE is set, so the default cannot be checked");
            return;
        }
        // Untouched in this process, the option holds mimalloc's default
        // reserve (1 GiB, in KiB): so the number names that option.
        // SAFETY: mi_option_get only reads the option.
        let reserve = unsafe { libmimalloc_sys::mi_option_get(ARENA_RESERVE) };
        assert_eq!(reserve, 1024 * 1024);
    }
}
