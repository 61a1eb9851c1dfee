//! One scrape: a fresh registry filled from what every config knows now,
//! encoded by `prometheus-client` (which also escapes label values: config
//! paths and service names come from users).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kepler_protocol::ServiceStatus;
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daemon::Daemon;
use crate::logs::Stream;

/// A config that does not answer within this time is left out of the
/// scrape rather than holding it.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    config: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    config: String,
    service: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;

#[derive(Default)]
struct Families {
    up: Family<ServiceLabels, Gauge>,
    healthy: Family<ServiceLabels, Gauge>,
    restarts: Family<ServiceLabels, Counter>,
    cpu_seconds: Family<ServiceLabels, FloatCounter>,
    memory_bytes: Family<ServiceLabels, Gauge>,
    start_time: Family<ServiceLabels, FloatGauge>,
    log_bytes: Family<StreamLabels, Counter>,
}

/// The exposition text of the daemon now.
pub async fn scrape(daemon: &Daemon) -> Result<String, std::fmt::Error> {
    let families = Families::default();
    let handles = daemon.registry().all();
    let observations = futures::future::join_all(handles.iter().map(|handle| async move {
        tokio::time::timeout(ACTOR_TIMEOUT, handle.observe())
            .await
            .ok()
            .and_then(Result::ok)
    }))
    .await;
    let mut loaded = 0;
    for (handle, observation) in handles.iter().zip(observations) {
        let Some(observation) = observation else {
            continue;
        };
        loaded += 1;
        let config = handle.path().to_string_lossy().into_owned();
        for service in &observation.services {
            let info = &service.info;
            let labels = ServiceLabels {
                config: config.clone(),
                service: info.name.clone(),
            };
            families
                .up
                .get_or_create(&labels)
                .set(i64::from(info.status.is_up()));
            families
                .healthy
                .get_or_create(&labels)
                .set(i64::from(info.status == ServiceStatus::Healthy));
            families
                .restarts
                .get_or_create(&labels)
                .inc_by(u64::from(info.restarts));
            if let Some(seconds) = info.cpu_seconds {
                families.cpu_seconds.get_or_create(&labels).inc_by(seconds);
            }
            if let Some(bytes) = info.memory_bytes {
                families
                    .memory_bytes
                    .get_or_create(&labels)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            if let Some(at_ms) = service.started_at_ms {
                families
                    .start_time
                    .get_or_create(&labels)
                    .set(at_ms as f64 / 1000.0);
            }
        }
        for (service, stream, bytes) in handle.logs().bytes_written() {
            let stream = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            families
                .log_bytes
                .get_or_create(&StreamLabels {
                    config: config.clone(),
                    service,
                    stream: stream.to_owned(),
                })
                .inc_by(bytes);
        }
    }

    let mut registry = Registry::default();
    let Families {
        up,
        healthy,
        restarts,
        cpu_seconds,
        memory_bytes,
        start_time,
        log_bytes,
    } = families;
    registry.register(
        "kepler_service_up",
        "Whether the service has a process up (running, healthy or unhealthy)",
        up,
    );
    registry.register(
        "kepler_service_healthy",
        "Whether the service's healthcheck passes",
        healthy,
    );
    registry.register(
        "kepler_service_restarts",
        "Automatic restarts of the service",
        restarts,
    );
    registry.register(
        "kepler_service_cpu_seconds",
        "CPU time used by the service's current process tree, at the last sampling tick",
        cpu_seconds,
    );
    registry.register(
        "kepler_service_memory_bytes",
        "Memory used by the service, at the last sampling tick",
        memory_bytes,
    );
    registry.register(
        "kepler_service_start_time_seconds",
        "When the service's current process started, in seconds since the epoch",
        start_time,
    );
    registry.register(
        "kepler_log_bytes",
        "Bytes written to the service's log files since the daemon started",
        log_bytes,
    );
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
    registry.register("kepler_build_info", "The daemon's version", build);
    let uptime = FloatGauge::default();
    uptime.set(daemon.uptime().as_secs_f64());
    registry.register(
        "kepler_daemon_uptime_seconds",
        "Seconds since the daemon started",
        uptime,
    );
    let configs = Gauge::<i64>::default();
    configs.set(loaded);
    registry.register(
        "kepler_configs_loaded",
        "Configs the daemon has loaded",
        configs,
    );
    let connections = Gauge::<i64>::default();
    connections.set(daemon.open_connections() as i64);
    registry.register(
        "kepler_connections",
        "Client connections open on the daemon's socket",
        connections,
    );

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// OpenMetrics text (as the crate writes it) in the classic Prometheus text
/// format: there a counter's `# HELP` and `# TYPE` name its samples, which
/// end in `_total`, and there is no `# EOF`. Only those metadata lines
/// change; samples and their escaped labels are kept as they are.
pub fn classic(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_owned());
        }
    }
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let metadata = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match metadata {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let openmetrics = "# HELP kepler_log_bytes Bytes.\n# TYPE kepler_log_bytes counter\n\
                           kepler_log_bytes_total{service=\"a b\"} 3\n\
                           # HELP kepler_connections Open.\n# TYPE kepler_connections gauge\n\
                           kepler_connections 1\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP kepler_log_bytes_total Bytes.\n# TYPE kepler_log_bytes_total counter\n\
             kepler_log_bytes_total{service=\"a b\"} 3\n\
             # HELP kepler_connections Open.\n# TYPE kepler_connections gauge\n\
             kepler_connections 1\n"
        );
    }
}
