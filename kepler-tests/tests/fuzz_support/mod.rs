//! The fuzz loop shared by the `fuzz_*` targets: generate inputs with
//! proptest until a time budget runs out, with a watchdog that turns a hang
//! or a runaway allocation into a reported finding instead of a stuck run.
//!
//! - `KEPLER_FUZZ_SECONDS` (default 3): time budget of each target.
//! - `KEPLER_FUZZ_SEED` (default: from the clock): the run's seed; a finding
//!   prints it, and the same seed replays the same inputs.
//! - `KEPLER_FUZZ_FIRST_BATCH` (default 0): skip straight to the batch a
//!   finding names.
#![allow(dead_code)] // each target uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;
use std::io::Write;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// How long one input may run before it counts as a hang.
pub const HANG_LIMIT: Duration = Duration::from_secs(5);
/// Memory held by the thread that runs a target's inputs above which the
/// input in flight counts as a runaway allocation (checked by the watchdog,
/// so it may overshoot a bit). Counted per thread, not for the process: a
/// target's tests run side by side, and one input's allocation must not be
/// blamed on another test's input.
pub const MEMORY_LIMIT: usize = 1 << 30;
/// Last resort: the allocator refuses to go past this, which aborts the
/// process rather than let an input eat the machine.
const MEMORY_HARD_LIMIT: usize = 4 << 30;

// ---------------------------------------------------------------------------
// Allocation accounting

/// Counts live bytes for the whole process, and for each thread the peak
/// since the last [`AllocationProbe`] reset, so a target can bound what one
/// input allocates.
pub struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without destructors: safe to touch from inside
    // the allocator (no lazy init that would allocate).
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
    /// Where this thread's live bytes are also published for a watchdog
    /// (null: nowhere).
    static THREAD_WATCHED: Cell<*const AtomicIsize> = const { Cell::new(std::ptr::null()) };
}

fn account(delta: isize) {
    let _ = THREAD_LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = THREAD_PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = THREAD_WATCHED.try_with(|watched| {
        // SAFETY: only ever set to a leaked, never freed counter.
        if let Some(counter) = unsafe { watched.get().as_ref() } {
            counter.fetch_add(delta, Ordering::Relaxed);
        }
    });
}

/// A counter of the live bytes of the calling thread from now on, for its
/// watchdog. Leaked: the allocator may touch it until the thread ends.
fn watch_this_thread() -> &'static AtomicIsize {
    let counter: &'static AtomicIsize = Box::leak(Box::new(AtomicIsize::new(0)));
    THREAD_WATCHED.with(|watched| watched.set(counter));
    counter
}

/// Stops publishing the calling thread's live bytes.
fn unwatch_this_thread() {
    THREAD_WATCHED.with(|watched| watched.set(std::ptr::null()));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size()
            > MEMORY_HARD_LIMIT
        {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        let ptr = System.alloc(layout);
        if ptr.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        } else {
            account(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old
            && LIVE_BYTES.fetch_add(new_size - old, Ordering::Relaxed) + (new_size - old)
                > MEMORY_HARD_LIMIT
        {
            LIVE_BYTES.fetch_sub(new_size - old, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        let new = System.realloc(ptr, layout, new_size);
        if new.is_null() {
            if new_size > old {
                LIVE_BYTES.fetch_sub(new_size - old, Ordering::Relaxed);
            }
            return new;
        }
        if new_size < old {
            LIVE_BYTES.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        account(new_size as isize - old as isize);
        new
    }
}

/// Measures the most this thread held at once while a closure ran, above
/// what it held before.
pub fn peak_allocation<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = THREAD_LIVE.with(Cell::get);
    THREAD_PEAK.with(|peak| peak.set(before));
    let result = work();
    let peak = THREAD_PEAK.with(Cell::get);
    (result, (peak - before).max(0) as usize)
}

// ---------------------------------------------------------------------------
// Watchdog

enum Beat {
    /// An input of this batch started.
    Started(u64),
    Finished,
}

/// A thread that reports the input in flight and ends the process when one
/// input runs past [`HANG_LIMIT`] or the process holds more than
/// [`MEMORY_LIMIT`]. A panic in the test thread could not stop a hung call,
/// so exiting is the only way to end the run.
struct Watchdog<V> {
    beats: mpsc::Sender<Beat>,
    /// The input in flight, kept as a value and formatted only on a finding:
    /// formatting every input would cost more than checking it.
    current: Arc<Mutex<Option<V>>>,
}

impl<V: Debug + Send + 'static> Watchdog<V> {
    /// Watches the inputs the calling thread runs.
    fn start(target: &'static str, seed: u64) -> Self {
        let (beats, rx) = mpsc::channel();
        let current = Arc::new(Mutex::new(None));
        let input = current.clone();
        let live = watch_this_thread();
        std::thread::Builder::new()
            .name(format!("{target}-watchdog"))
            .spawn(move || watch(target, seed, rx, input, live))
            .expect("cannot start the fuzz watchdog");
        Self { beats, current }
    }

    fn started(&self, batch: u64, input: V) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(input);
        let _ = self.beats.send(Beat::Started(batch));
    }

    fn finished(&self) {
        let _ = self.beats.send(Beat::Finished);
    }
}

impl<V> Drop for Watchdog<V> {
    fn drop(&mut self) {
        // The counter stays (leaked); this thread just stops feeding it.
        unwatch_this_thread();
    }
}

fn watch<V: Debug>(
    target: &str,
    seed: u64,
    beats: mpsc::Receiver<Beat>,
    current: Arc<Mutex<Option<V>>>,
    thread_live: &AtomicIsize,
) {
    // Memory is sampled on a short tick: the allocator cannot report by
    // itself (printing would allocate inside the allocator).
    const TICK: Duration = Duration::from_millis(50);
    let mut running_since: Option<Instant> = None;
    let mut batch = 0;
    loop {
        match beats.recv_timeout(TICK) {
            Ok(Beat::Started(of)) => {
                running_since = Some(Instant::now());
                batch = of;
            }
            Ok(Beat::Finished) => running_since = None,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let live = thread_live.load(Ordering::Relaxed).max(0) as usize;
        let hung = running_since.is_some_and(|since| since.elapsed() > HANG_LIMIT);
        if hung || (running_since.is_some() && live > MEMORY_LIMIT) {
            let what = if hung {
                format!("ran longer than {HANG_LIMIT:?}")
            } else {
                format!(
                    "holds {} MiB on its thread (limit {} MiB)",
                    live >> 20,
                    MEMORY_LIMIT >> 20
                )
            };
            let input = current.lock().unwrap_or_else(|e| e.into_inner());
            let input = input
                .as_ref()
                .map(|input| format!("{input:#?}"))
                .unwrap_or_default();
            // Written to the real stderr: the test harness captures
            // `eprintln!` and would drop it when the process exits.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\nFUZZ FINDING in {target}: an input {what}.\n\
                 replay: KEPLER_FUZZ_SEED={seed} KEPLER_FUZZ_FIRST_BATCH={batch}\n\
                 input:\n{input}\n"
            );
            std::process::exit(101);
        }
    }
}

// ---------------------------------------------------------------------------
// Panics

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps panics inside a case quiet (proptest catches them, and shrinking
/// would print hundreds) but remembers where the last one happened, which
/// the report needs; panics outside cases print as usual.
fn install_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one hand-written input under the watchdog: a hang or a runaway
/// allocation ends the process with the input printed, as in [`fuzz`].
pub fn guarded<V, T>(name: &'static str, input: &V, work: impl FnOnce() -> T) -> T
where
    V: Clone + Debug + Send + 'static,
{
    let watchdog = Watchdog::start(name, 0);
    watchdog.started(0, input.clone());
    let result = work();
    watchdog.finished();
    result
}

// ---------------------------------------------------------------------------
// The loop

/// Clears [`IN_CASE`] when a case ends, by return or by panic.
struct CaseFlag;

impl Drop for CaseFlag {
    fn drop(&mut self) {
        IN_CASE.with(|flag| flag.set(false));
    }
}

/// One fuzz target's settings.
pub struct Target {
    pub name: &'static str,
    /// Inputs per proptest run; a finding is replayed within its batch.
    pub batch: u32,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty())?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The time budget of each target.
pub fn budget() -> Duration {
    Duration::from_secs_f64(env_number::<f64>("KEPLER_FUZZ_SECONDS").unwrap_or(3.0))
}

fn run_seed() -> u64 {
    env_number("KEPLER_FUZZ_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    })
}

/// A batch's RNG seed from the run's seed (splitmix64, so neighbouring batch
/// numbers give unrelated streams).
fn batch_seed(seed: u64, batch: u64) -> [u8; 32] {
    let mut state = seed ^ batch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

/// Feeds inputs from `strategy` to `check` until the budget runs out. A
/// failing check (an `Err` or a panic) is shrunk by proptest and reported
/// with the seed that replays it; a hang or runaway allocation ends the
/// process through the watchdog. Returns how many inputs ran.
pub fn fuzz<S>(
    target: Target,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) -> u64
where
    S: Strategy,
    S::Value: Clone + Send + 'static,
{
    let budget = budget();
    let seed = run_seed();
    let first_batch: u64 = env_number("KEPLER_FUZZ_FIRST_BATCH").unwrap_or(0);
    let watchdog = Watchdog::start(target.name, seed);
    install_panic_hook();
    let tried = AtomicU64::new(0);
    let started = Instant::now();
    let mut batch = first_batch;
    // At least one batch, so a replay with a tiny budget still runs.
    while batch == first_batch || started.elapsed() < budget {
        let config = Config {
            cases: target.batch,
            failure_persistence: None,
            // Shrinking a finding must end too.
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &batch_seed(seed, batch));
        let mut runner = TestRunner::new_with_rng(config, rng);
        let outcome = runner.run(&strategy, |input| {
            tried.fetch_add(1, Ordering::Relaxed);
            watchdog.started(batch, input.clone());
            IN_CASE.with(|flag| flag.set(true));
            // Reset on unwind too: the guard's drop runs while proptest
            // catches the panic.
            let _quiet = CaseFlag;
            let result = check(&input);
            watchdog.finished();
            result
        });
        if let Err(error) = outcome {
            let detail = match error {
                TestError::Fail(reason, input) => format!("{reason}\nminimal input:\n{input:#?}"),
                TestError::Abort(reason) => format!("aborted: {reason}"),
            };
            let panic = LAST_PANIC
                .with(|last| last.borrow_mut().take())
                .map(|panic| format!("\nlast panic: {panic}"))
                .unwrap_or_default();
            let detail = format!("{detail}{panic}");
            panic!(
                "FUZZ FINDING in {}: {detail}\n\
                 replay: KEPLER_FUZZ_SEED={seed} KEPLER_FUZZ_FIRST_BATCH={batch}",
                target.name
            );
        }
        batch += 1;
    }
    let tried = tried.into_inner();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {}: {tried} inputs in {secs:.1} s ({:.0}/s), seed {seed}, no finding",
        target.name,
        tried as f64 / secs.max(1e-9)
    );
    tried
}
