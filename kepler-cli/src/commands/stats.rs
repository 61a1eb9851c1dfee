//! `kepler stats [SERVICE...] [--since D] [--json]`: per service, CPU and
//! memory over a window (least, mean, most), restarts in the window and the
//! last sample, from the history the daemon keeps.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use comfy_table::{presets, Attribute, Cell, ContentArrangement, Table};
use kepler_protocol::{ConfigStats, Request, Response, ServiceStats, Spread};
use serde::Serialize;

use crate::cli::StatsArgs;
use crate::client::Client;
use crate::config_ref::config_ref;
use crate::human_size::{human_bytes, human_percent};
use crate::human_time::human_duration;
use crate::style::Paint;
use crate::terminal_text::TextMode;

pub async fn run(file: Option<&Path>, args: StatsArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let path = config.path.clone();
    let mut client = Client::connect().await?;
    let request = Request::Stats {
        config,
        services: args.services,
        since_ms: args.since.map(|since| since.as_millis() as u64),
    };
    let stats = match crate::client::into_result(client.request(request).await?)? {
        Response::Stats(stats) => stats,
        Response::NotLoaded { .. } => bail!("{}", super::not_loaded(&path)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&JsonStats::from(&stats))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if stats.interval_ms == 0 {
        println!(
            "sampling is off for {} (kepler.metrics.interval: 0): there is no history",
            TextMode::for_stdout(false).show(&stats.path.to_string_lossy())
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", render_table(&stats, Paint::for_stdout()));
    Ok(ExitCode::SUCCESS)
}

/// The table, without a final newline.
pub fn render_table(stats: &ConfigStats, paint: Paint) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).force_no_tty();
    table.set_content_arrangement(ContentArrangement::Disabled);
    if paint.enabled() {
        table.enforce_styling();
    }
    let header = [
        "NAME", "SAMPLES", "CPU MIN", "CPU AVG", "CPU MAX", "MEM MIN", "MEM AVG", "MEM MAX",
        "RESTARTS", "LAST",
    ];
    table.set_header(header.into_iter().map(|title| {
        let cell = Cell::new(title);
        if paint.enabled() {
            cell.add_attribute(Attribute::Bold)
        } else {
            cell
        }
    }));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for service in &stats.services {
        let cpu = spread(service.cpu_percent, human_percent);
        let memory = spread(service.memory_bytes, |b| human_bytes(b as u64));
        let last = service.last.map_or_else(String::new, |last| {
            let age = now_ms.saturating_sub(last.at_ms) / 1000;
            format!(
                "{} {} ({} ago)",
                human_percent(last.cpu_percent),
                human_bytes(last.memory_bytes),
                human_duration(age)
            )
        });
        let mut row = vec![Cell::new(&service.name), Cell::new(service.samples)];
        row.extend(cpu.into_iter().chain(memory).map(Cell::new));
        row.push(Cell::new(service.restarts));
        row.push(Cell::new(last));
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

fn spread(value: Option<Spread>, show: impl Fn(f64) -> String) -> [String; 3] {
    match value {
        Some(s) => [show(s.min), show(s.avg), show(s.max)],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// `stats --json`. Field names are part of the CLI's interface: keep them
/// stable.
#[derive(Debug, Serialize)]
pub struct JsonStats<'a> {
    pub config: &'a Path,
    /// 0 when sampling is off.
    pub interval_ms: u64,
    pub retention_ms: u64,
    /// Start of the window, milliseconds since the epoch.
    pub since_ms: u64,
    pub services: &'a [ServiceStats],
}

impl<'a> From<&'a ConfigStats> for JsonStats<'a> {
    fn from(stats: &'a ConfigStats) -> Self {
        JsonStats {
            config: &stats.path,
            interval_ms: stats.interval_ms,
            retention_ms: stats.retention_ms,
            since_ms: stats.since_ms,
            services: &stats.services,
        }
    }
}
