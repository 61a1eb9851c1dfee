//! How long from a file write to the `WatchEvent` that would restart the
//! service, with the default 100 ms debounce. The debounce is trailing-edge,
//! so the floor is the debounce itself; the target is debounce + well under
//! 50 ms.
//!
//! Run: `cargo run --release -p kepler-daemon --example watch_latency`

use std::time::{Duration, Instant};

use kepler_daemon::watcher::{WatchHub, WatchReport, WatchSpec, DEFAULT_DEBOUNCE};
use tokio::sync::mpsc;

const ITERATIONS: usize = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let (sender, mut events) = mpsc::unbounded_channel();
    let spec = WatchSpec {
        service: "bench".to_owned(),
        root: root.clone(),
        patterns: vec!["src/**/*.ts".to_owned()],
        ignore: Vec::new(),
        identity: None,
    };
    std::fs::create_dir(root.join("src"))?;
    let _handle = WatchHub::shared()?.watch(spec, DEFAULT_DEBOUNCE, sender)?;

    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS {
        let written = Instant::now();
        std::fs::write(root.join("src/main.ts"), format!("// edit {i}\n"))?;
        let event = match tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await?
            .ok_or("the watch ended")?
        {
            WatchReport::Changed(event) => event,
            WatchReport::Note { text, .. } => return Err(text.into()),
        };
        samples.push(written.elapsed());
        assert_eq!(event.paths, [root.join("src/main.ts")]);
    }
    samples.sort();
    let median = samples[ITERATIONS / 2];
    let over = |d: Duration| d.saturating_sub(DEFAULT_DEBOUNCE).as_secs_f64() * 1000.0;
    println!(
        "write -> WatchEvent over {ITERATIONS} writes, debounce {} ms: median {:.1} ms \
         (debounce + {:.1} ms), min {:.1} ms, max {:.1} ms",
        DEFAULT_DEBOUNCE.as_millis(),
        median.as_secs_f64() * 1000.0,
        over(median),
        samples[0].as_secs_f64() * 1000.0,
        samples[ITERATIONS - 1].as_secs_f64() * 1000.0,
    );
    Ok(())
}
