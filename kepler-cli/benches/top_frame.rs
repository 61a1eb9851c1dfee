//! Time to draw one frame of `kepler top` for a large config, without a
//! daemon or a terminal: a model of N services with full sparklines takes a
//! sampling tick and is drawn into an in-memory terminal, as `kepler top`
//! does on each frame. Run by bench/observability.sh:
//!   cargo bench -p kepler-cli --bench top_frame -- [SERVICES] [FRAMES]
//! Prints one JSON object with the median and p95 per frame in milliseconds.

// The CLI is a binary crate: its drawing code is compiled in here from its
// own files, and the parts of those modules a frame does not use (their
// tests too, when a check builds this with cfg(test)) are unused.
#![allow(dead_code, unused_imports)]

#[path = "../src/human_size.rs"]
mod human_size;
#[path = "../src/human_time.rs"]
mod human_time;
#[path = "../src/style.rs"]
mod style;
#[path = "../src/terminal_text.rs"]
mod terminal_text;

#[path = "../src/commands"]
mod commands {
    pub mod top {
        pub mod model;
        pub mod render;
    }
}

use std::time::Instant;

use commands::top::model::{Model, SPARK_SAMPLES};
use commands::top::render::draw;
use kepler_protocol::{ServiceHistory, ServiceInfo, ServiceStatus, TopConfig, TopFrame};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const CONFIG: &str = "/srv/app/kepler.yaml";

fn services(count: usize, tick: usize) -> Vec<ServiceInfo> {
    (0..count)
        .map(|i| ServiceInfo {
            name: format!("service-{i:04}"),
            status: if i % 10 == 0 {
                ServiceStatus::Healthy
            } else {
                ServiceStatus::Running
            },
            pid: Some(10_000 + i as u32),
            uptime_secs: Some(3_600 + tick as u64),
            restarts: (i % 3) as u32,
            health_failures: (i % 10 == 0).then_some(0),
            reason: None,
            cpu_percent: Some(((i * 7 + tick) % 100) as f64 / 3.0),
            memory_bytes: Some(((i % 50) as u64 + 1) << 20),
            cpu_seconds: Some(tick as f64),
            service: format!("service-{i:04}"),
            replica: None,
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; numbers are ours.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = numbers.first().copied().unwrap_or(1000);
    let frames = numbers.get(1).copied().unwrap_or(200);
    let (width, height) = (200, 60);

    let mut model = Model::new(CONFIG.to_owned(), false);
    let history = (0..count)
        .map(|i| ServiceHistory {
            name: format!("service-{i:04}"),
            cpu_percent: (0..SPARK_SAMPLES).map(|s| Some((s % 40) as f32)).collect(),
            memory_bytes: (0..SPARK_SAMPLES)
                .map(|s| Some((s as u64 + 1) << 20))
                .collect(),
        })
        .collect();
    model.apply(TopFrame {
        sampled: false,
        configs: vec![TopConfig {
            path: CONFIG.into(),
            services: services(count, 0),
            history,
        }],
    });
    // The selection half-way down, so the table scrolls.
    for _ in 0..count / 2 {
        model.move_selection(1);
    }
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("in memory");

    let mut times = Vec::with_capacity(frames);
    for tick in 1..=frames {
        let frame = TopFrame {
            sampled: true,
            configs: vec![TopConfig {
                path: CONFIG.into(),
                services: services(count, tick),
                history: Vec::new(),
            }],
        };
        let start = Instant::now();
        model.apply(frame);
        terminal.draw(|f| draw(f, &model)).expect("in memory");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
    println!(
        "{{\"services\": {count}, \"frames\": {frames}, \"width\": {width}, \"height\": {height}, \
         \"median_ms\": {median:.3}, \"p95_ms\": {p95:.3}}}"
    );
}
