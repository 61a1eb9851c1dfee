//! Baking `kepler.metrics`: how often the daemon samples the config's
//! services and how long it keeps the samples.

use serde::{Deserialize, Serialize};

use super::decode::{fields, text};
use super::document::Node;
use super::error::Diagnostics;
use super::values::HumanDuration;

const METRICS_KEYS: &[&str] = &["interval", "retention"];

/// Sampling more often than this measures the kernel's accounting more than
/// the service, and costs a write per tick.
pub const MIN_INTERVAL: HumanDuration = HumanDuration::from_millis(100);
/// Samples kept per service: the history file holds this many rows at most
/// (12 bytes per service each), whatever retention and interval say.
pub const MAX_SAMPLES: u64 = 200_000;

/// Usage history settings of one config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Time between samples; zero turns sampling and the history off.
    pub interval: HumanDuration,
    /// How long samples are kept.
    pub retention: HumanDuration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: HumanDuration::from_secs(5),
            retention: HumanDuration::from_secs(24 * 3600),
        }
    }
}

impl MetricsConfig {
    pub fn is_default(&self) -> bool {
        *self == MetricsConfig::default()
    }

    /// Sampling is on.
    pub fn enabled(&self) -> bool {
        !self.interval.0.is_zero()
    }

    /// Rows the history keeps: every sample within the retention, and one
    /// more so a full window always has its oldest edge.
    pub fn samples(&self) -> u64 {
        if !self.enabled() {
            return 0;
        }
        let interval = self.interval.0.as_millis().max(1) as u64;
        (self.retention.0.as_millis() as u64).div_ceil(interval) + 1
    }

    /// What is wrong with these settings, if anything: `(key, message)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !self.enabled() {
            return None;
        }
        if self.interval < MIN_INTERVAL {
            return Some((
                "interval",
                format!(
                    "{} is too short: sample at most every {MIN_INTERVAL}, or write 0 to turn sampling off",
                    self.interval
                ),
            ));
        }
        if self.retention < self.interval {
            return Some((
                "retention",
                format!(
                    "{} is shorter than the interval {}: no sample would be kept",
                    self.retention, self.interval
                ),
            ));
        }
        if self.samples() > MAX_SAMPLES {
            return Some((
                "retention",
                format!(
                    "{} at one sample every {} is {} samples per service, more than the {MAX_SAMPLES} kept; keep less or sample less often",
                    self.retention,
                    self.interval,
                    self.samples()
                ),
            ));
        }
        None
    }
}

pub(crate) fn metrics(node: &Node, path: &str, diag: &mut Diagnostics) -> MetricsConfig {
    let mut metrics = MetricsConfig::default();
    let Some(map) = fields(node, path, METRICS_KEYS, diag) else {
        return metrics;
    };
    let mut mark = node.mark;
    if let Some(node) = map.get("interval") {
        let path = map.path("interval");
        if let Some(text) = text(node, &path, diag) {
            // `0` (no unit) is the documented way to turn sampling off.
            match text.trim() {
                "0" => metrics.interval = HumanDuration::default(),
                text => match text.parse::<HumanDuration>() {
                    Ok(interval) => metrics.interval = interval,
                    Err(message) => diag.at(node.mark, &path, message),
                },
            }
        }
        mark = node.mark;
    }
    if map.get("retention").is_none() && metrics.samples() > MAX_SAMPLES {
        // A short interval with the default retention keeps what the bound
        // allows rather than being an error nobody wrote.
        metrics.retention = HumanDuration(metrics.interval.0 * (MAX_SAMPLES as u32 - 1));
    }
    if let Some(node) = map.get("retention") {
        let path = map.path("retention");
        if let Some(text) = text(node, &path, diag) {
            match text.parse::<HumanDuration>() {
                Ok(retention) => metrics.retention = retention,
                Err(message) => diag.at(node.mark, &path, message),
            }
        }
        mark = node.mark;
    }
    if let Some((key, message)) = metrics.problem() {
        let mark = map.get(key).map_or(mark, |node| node.mark);
        diag.at(mark, &map.path(key), message);
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_interval_shortens_the_default_retention_to_the_bound() {
        let yaml = "kepler:\n  metrics:\n    interval: 100ms\nservices:\n  a:\n    command: [a]\n";
        let baked = crate::config::bake_source(
            std::path::Path::new("/srv/kepler.yaml"),
            yaml.into(),
            &Default::default(),
        )
        .unwrap();
        let metrics = baked.config.kepler.metrics;
        assert_eq!(metrics.samples(), MAX_SAMPLES);
        assert_eq!(metrics.problem(), None);
    }

    #[test]
    fn the_sample_count_covers_the_retention() {
        let config = MetricsConfig {
            interval: HumanDuration::from_millis(100),
            retention: HumanDuration::from_secs(2),
        };
        assert_eq!(config.samples(), 21);
        assert_eq!(MetricsConfig::default().samples(), 17_281);
        let off = MetricsConfig {
            interval: HumanDuration::default(),
            ..MetricsConfig::default()
        };
        assert_eq!(off.samples(), 0);
        assert_eq!(off.problem(), None);
    }
}
