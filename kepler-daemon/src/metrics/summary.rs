//! Reading a config's history back: per service figures over a window for
//! `kepler stats`, and the newest samples for `top`'s sparklines. Both
//! stream the file; memory grows with the services asked about only.

use std::fs::File;
use std::io;

use kepler_protocol::{LastSample, ServiceHistory, ServiceStats, Spread};

use super::history::{read_rows, Layout, Sample};

/// Running min / sum / max of one series.
#[derive(Default)]
struct Accumulator {
    count: u64,
    min: f64,
    sum: f64,
    max: f64,
}

impl Accumulator {
    fn add(&mut self, value: f64) {
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        if self.count == 0 || value > self.max {
            self.max = value;
        }
        self.count += 1;
        self.sum += value;
    }

    fn spread(&self) -> Option<Spread> {
        (self.count > 0).then(|| Spread {
            min: self.min,
            avg: self.sum / self.count as f64,
            max: self.max,
        })
    }
}

#[derive(Default)]
struct Figures {
    cpu: Accumulator,
    memory: Accumulator,
    restarts: u32,
    previous_restarts: Option<u32>,
    first_at_ms: Option<u64>,
    last: Option<LastSample>,
}

impl Figures {
    fn add(&mut self, at_ms: u64, sample: Sample) {
        self.cpu.add(sample.cpu_percent);
        self.memory.add(sample.memory_bytes as f64);
        // A count lower than before was reset (the config was baked again):
        // it restarted from zero.
        if let Some(previous) = self.previous_restarts {
            self.restarts += sample.restarts.saturating_sub(previous);
        }
        self.previous_restarts = Some(sample.restarts);
        self.first_at_ms.get_or_insert(at_ms);
        self.last = Some(LastSample {
            at_ms,
            cpu_percent: sample.cpu_percent,
            memory_bytes: sample.memory_bytes,
        });
    }
}

/// Figures of the services at `wanted` (indexes into `names`, the config's
/// services in name order) over the rows written at or after `since_ms`.
pub fn summarize(
    file: &File,
    layout: Layout,
    names: &[String],
    wanted: &[usize],
    since_ms: u64,
) -> io::Result<Vec<ServiceStats>> {
    let mut figures: Vec<Figures> = wanted.iter().map(|_| Figures::default()).collect();
    read_rows(file, layout, since_ms, u64::MAX, |row| {
        for (slot, &index) in figures.iter_mut().zip(wanted) {
            if let Some(sample) = row.sample(index) {
                slot.add(row.at_ms, sample);
            }
        }
    })?;
    Ok(wanted
        .iter()
        .zip(figures)
        .map(|(&index, figures)| ServiceStats {
            name: names[index].clone(),
            samples: figures.cpu.count,
            cpu_percent: figures.cpu.spread(),
            memory_bytes: figures.memory.spread(),
            restarts: figures.restarts,
            first_at_ms: figures.first_at_ms,
            last: figures.last,
        })
        .collect())
}

/// Figures of the services at `wanted` when there is no history (sampling
/// is off, or nothing was sampled yet).
pub fn summarize_nothing(names: &[String], wanted: &[usize]) -> Vec<ServiceStats> {
    wanted
        .iter()
        .map(|&index| ServiceStats {
            name: names[index].clone(),
            samples: 0,
            cpu_percent: None,
            memory_bytes: None,
            restarts: 0,
            first_at_ms: None,
            last: None,
        })
        .collect()
}

/// The newest `count` rows at or after `since_ms`, per service, oldest
/// first.
pub fn recent(
    file: &File,
    layout: Layout,
    names: &[String],
    count: u64,
    since_ms: u64,
) -> io::Result<Vec<ServiceHistory>> {
    let mut history: Vec<ServiceHistory> = names
        .iter()
        .map(|name| ServiceHistory {
            name: name.clone(),
            cpu_percent: Vec::new(),
            memory_bytes: Vec::new(),
        })
        .collect();
    read_rows(file, layout, since_ms, count, |row| {
        for (index, service) in history.iter_mut().enumerate() {
            let sample = row.sample(index);
            service
                .cpu_percent
                .push(sample.map(|s| s.cpu_percent as f32));
            service.memory_bytes.push(sample.map(|s| s.memory_bytes));
        }
    })?;
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, MetricsConfig};
    use crate::metrics::history::HistoryWriter;

    #[test]
    fn figures_cover_the_window_and_count_restarts_between_samples() {
        let settings = MetricsConfig {
            interval: HumanDuration::from_millis(100),
            retention: HumanDuration::from_secs(60),
        };
        let names = vec!["busy".to_string(), "idle".to_string()];
        let layout = Layout::of(names.iter().map(String::as_str), &settings).unwrap();
        let file = tempfile::tempfile().unwrap();
        let mut writer = HistoryWriter::open(file.try_clone().unwrap(), layout).unwrap();
        let sample = |cpu: f64, memory: u64, restarts: u32| {
            Some(Sample {
                cpu_percent: cpu,
                memory_bytes: memory,
                restarts,
            })
        };
        writer
            .append(1000, &[sample(10.0, 100 << 10, 0), None])
            .unwrap();
        writer
            .append(2000, &[sample(90.0, 300 << 10, 1), sample(0.0, 1 << 10, 0)])
            .unwrap();
        writer
            .append(3000, &[sample(50.0, 200 << 10, 3), sample(0.0, 1 << 10, 0)])
            .unwrap();

        let stats = summarize(&file, layout, &names, &[0, 1], 0).unwrap();
        let busy = &stats[0];
        assert_eq!(busy.samples, 3);
        assert_eq!(
            busy.cpu_percent,
            Some(Spread {
                min: 10.0,
                avg: 50.0,
                max: 90.0
            })
        );
        assert_eq!(busy.memory_bytes.unwrap().max, (300 << 10) as f64);
        assert_eq!(busy.restarts, 3);
        assert_eq!(busy.last.unwrap().at_ms, 3000);
        assert_eq!(busy.first_at_ms, Some(1000));
        assert_eq!(stats[1].samples, 2);
        assert_eq!(stats[1].cpu_percent.unwrap().max, 0.0);

        let window = summarize(&file, layout, &names, &[0], 2500).unwrap();
        assert_eq!(window[0].samples, 1);
        assert_eq!(window[0].restarts, 0);

        let recent = recent(&file, layout, &names, 2, 0).unwrap();
        assert_eq!(recent[0].cpu_percent, [Some(90.0), Some(50.0)]);
        assert_eq!(recent[1].memory_bytes, [Some(1024), Some(1024)]);
    }
}
