//! Compose's resource limits as Kepler's cgroup limits: `mem_limit`,
//! `memswap_limit`, `cpus` (or `cpu_quota`/`cpu_period`), `pids_limit` and
//! `deploy.resources.limits`. Kepler enforces them per service through its
//! cgroup, as Docker does per container.

use std::path::Path;

use super::super::model::Limits;
use super::super::tree::Value;
use super::super::{check_keys, Format, Loc, Report};

/// Fills `limits` from the service's resource keys.
pub fn read(
    node: &Value,
    what: &str,
    path: &Path,
    report: &mut Report,
    limits: &mut Limits,
) -> Result<(), String> {
    let line_of = |value: &Value, key: &str| {
        value
            .entries()
            .iter()
            .find(|e| e.key == key)
            .map_or(value.line, |e| e.line)
    };
    let memory = match node.get("mem_limit").and_then(Value::scalar) {
        Some(text) => Some(bytes(text).ok_or(format!(
            "mem_limit `{text}` is not a size (a number of bytes, or with b, k, m or g)"
        ))?),
        None => None,
    };
    let mut cpus = match node.get("cpus").and_then(Value::scalar) {
        Some(text) => Some(cpu_count(text).ok_or(format!(
            "cpus `{text}` is not a number of CPUs between 0.01 and 10000"
        ))?),
        None => None,
    };
    if cpus.is_none() {
        if let Some(quota) = node.get("cpu_quota").and_then(Value::scalar) {
            let period = node
                .get("cpu_period")
                .and_then(Value::scalar)
                .unwrap_or("100000");
            let (Ok(quota), Ok(period)) = (quota.parse::<f64>(), period.parse::<f64>()) else {
                return Err(format!(
                    "cpu_quota `{quota}` / cpu_period `{period}` are not numbers of microseconds"
                ));
            };
            if quota > 0.0 && period > 0.0 {
                cpus = cpu_count(&(quota / period).to_string());
            }
        }
    }
    let pids = match node.get("pids_limit").and_then(Value::scalar) {
        Some(text) => {
            let n: i64 = text
                .parse()
                .map_err(|_| format!("pids_limit `{text}` is not a whole number"))?;
            // 0 and -1 mean no limit in Docker.
            (n > 0).then_some(n as u64)
        }
        None => None,
    };
    limits.memory = memory.map(size);
    limits.cpus = cpus;
    limits.pids = pids;

    if let Some(total) = node.get("memswap_limit").and_then(Value::scalar) {
        let at = Loc::new(path, line_of(node, "memswap_limit"));
        match (total, memory) {
            ("-1", _) => report.note(
                Some(at),
                format!("{what} memswap_limit -1 (unlimited swap): Kepler has no unlimited swap; set limits.swap to the size wanted"),
            ),
            (_, None) => report.note(
                Some(at),
                format!("{what} memswap_limit without mem_limit limits nothing in Docker; left out"),
            ),
            (text, Some(memory)) => {
                let total = bytes(text).ok_or(format!(
                    "memswap_limit `{text}` is not a size (a number of bytes, or with b, k, m or g)"
                ))?;
                // Docker counts memory and swap together; Kepler's swap is swap only.
                limits.swap = Some(size(total.saturating_sub(memory)));
            }
        }
    } else if memory.is_some() {
        report.note(
            Some(Loc::new(path, line_of(node, "mem_limit"))),
            format!("{what} mem_limit: Docker also allows as much swap again; Kepler allows none unless limits.swap is set"),
        );
    }

    if let Some(resources) = node.get("deploy").and_then(|d| d.get("resources")) {
        let what = format!("{what} deploy.resources");
        if let Some(caps) = resources.get("limits") {
            if let Some(text) = caps.get("memory").and_then(Value::scalar) {
                let memory = bytes(text).ok_or(format!(
                    "deploy.resources.limits.memory `{text}` is not a size"
                ))?;
                limits.memory = Some(size(memory));
            }
            if let Some(text) = caps.get("cpus").and_then(Value::scalar) {
                limits.cpus = Some(cpu_count(text).ok_or(format!(
                    "deploy.resources.limits.cpus `{text}` is not a number of CPUs between 0.01 and 10000"
                ))?);
            }
            if let Some(text) = caps.get("pids").and_then(Value::scalar) {
                let n: i64 = text.parse().map_err(|_| {
                    format!("deploy.resources.limits.pids `{text}` is not a whole number")
                })?;
                limits.pids = (n > 0).then_some(n as u64);
            }
            check_keys(
                caps,
                path,
                &format!("{what}.limits"),
                &["memory", "cpus", "pids"],
                &[],
                Format::Compose,
                report,
            );
        }
        check_keys(
            resources,
            path,
            &what,
            &["limits"],
            &[(
                "reservations",
                "Kepler reserves nothing for a service; only limits are enforced",
            )],
            Format::Compose,
            report,
        );
    }
    Ok(())
}

/// A Compose size in bytes: `1024`, `2b`, `300k`, `512m`, `1.5g`, `2gb`.
fn bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    let value = number * scale as f64;
    (value.is_finite() && value >= 0.0 && value < u64::MAX as f64).then(|| value.round() as u64)
}

/// A size as Kepler writes it: the largest unit that divides it exactly.
fn size(bytes: u64) -> String {
    for (unit, scale) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// A CPU count as Kepler takes it: 0.01 to 10000, three decimals at most.
fn cpu_count(text: &str) -> Option<f64> {
    let cpus: f64 = text.trim().parse().ok()?;
    let rounded = (cpus * 1000.0).round() / 1000.0;
    (0.01..=10000.0).contains(&rounded).then_some(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_sizes_become_kepler_sizes() {
        assert_eq!(bytes("512m").map(size).as_deref(), Some("512M"));
        assert_eq!(bytes("1gb").map(size).as_deref(), Some("1G"));
        assert_eq!(bytes("1.5g").map(size).as_deref(), Some("1536M"));
        assert_eq!(bytes("2048k").map(size).as_deref(), Some("2M"));
        assert_eq!(bytes("1000").map(size).as_deref(), Some("1000"));
        assert_eq!(bytes("12x"), None);
        assert_eq!(bytes("m"), None);
    }

    #[test]
    fn cpu_counts_are_rounded_and_bounded() {
        assert_eq!(cpu_count("0.5"), Some(0.5));
        assert_eq!(cpu_count("1.23456"), Some(1.235));
        assert_eq!(cpu_count("0.001"), None);
        assert_eq!(cpu_count("many"), None);
    }
}
