//! Decoding `healthcheck`: a command (`test`), an HTTP URL or a TCP address,
//! with its timing.

use super::decode::{fields, parsed, string_list, text, whole_number};
use super::document::{Node, NodeValue};
use super::error::Diagnostics;
use super::snapshot::{HealthProbe, Healthcheck};
use super::values::HumanDuration;

const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "http",
    "tcp",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const PROBES: [&str; 3] = ["test", "http", "tcp"];

pub(crate) fn healthcheck(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<Healthcheck> {
    let map = fields(node, path, HEALTHCHECK_KEYS, diag)?;
    let given: Vec<(&str, &Node)> = PROBES
        .iter()
        .filter_map(|key| map.get(key).map(|node| (*key, node)))
        .collect();
    let probe = match given.as_slice() {
        [] => {
            diag.at(
                node.mark,
                path,
                "a healthcheck needs exactly one of `test` (a command), `http` (a URL) or `tcp` (host:port); found none",
            );
            None
        }
        [(key, probe_node)] => probe(key, probe_node, &map.path(key), diag),
        [(first, _), (second, second_node), ..] => {
            diag.at(
                second_node.mark,
                &map.path(second),
                format!("a healthcheck takes exactly one of `test`, `http` or `tcp`; found both `{first}` and `{second}`"),
            );
            None
        }
    };
    let duration = |key: &str, default: HumanDuration, diag: &mut Diagnostics| {
        map.get(key)
            .map_or(Some(default), |node| parsed(node, &map.path(key), diag))
    };
    let interval = duration("interval", HumanDuration::from_secs(30), diag)?;
    let timeout = duration("timeout", HumanDuration::from_secs(30), diag)?;
    let start_period = duration("start_period", HumanDuration::from_secs(0), diag)?;
    if interval.0.is_zero() {
        if let Some(node) = map.get("interval") {
            diag.at(
                node.mark,
                &map.path("interval"),
                "`interval` must be longer than 0s",
            );
        }
    }
    let retries = match map.get("retries") {
        Some(node) => whole_number(node, &map.path("retries"), diag)?,
        None => 3,
    };
    Some(Healthcheck {
        probe: probe?,
        interval,
        timeout,
        retries,
        start_period,
    })
}

fn probe(key: &str, node: &Node, path: &str, diag: &mut Diagnostics) -> Option<HealthProbe> {
    match key {
        "test" => test_command(node, path, diag).map(HealthProbe::Test),
        "http" => {
            let url = text(node, path, diag)?;
            check_http_url(url)
                .map_err(|message| diag.at(node.mark, path, message))
                .ok()?;
            Some(HealthProbe::Http(url.to_owned()))
        }
        _ => {
            let address = text(node, path, diag)?;
            check_tcp_address(address)
                .map_err(|message| diag.at(node.mark, path, message))
                .ok()?;
            Some(HealthProbe::Tcp(address.to_owned()))
        }
    }
}

/// Normalises Docker's forms to an argv: `["CMD", argv...]`,
/// `["CMD-SHELL", "line"]` and a plain string both run `sh -c`.
fn test_command(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<Vec<String>> {
    let shell = |line: &str| vec!["sh".to_owned(), "-c".to_owned(), line.to_owned()];
    if let NodeValue::Scalar { text, .. } = &node.value {
        return Some(shell(text));
    }
    let items = string_list(node, path, diag)?;
    let argv = match items.first().map(String::as_str) {
        Some("CMD") => items[1..].to_vec(),
        Some("CMD-SHELL") => match &items[1..] {
            [line] => shell(line),
            _ => {
                diag.at(
                    node.mark,
                    path,
                    "[\"CMD-SHELL\", ...] takes exactly one shell line after CMD-SHELL",
                );
                return None;
            }
        },
        _ => items,
    };
    if argv.first().is_none_or(|program| program.trim().is_empty()) {
        diag.at(
            node.mark,
            path,
            "the health check command is empty; give the program to run",
        );
        return None;
    }
    Some(argv)
}

/// Plain `http://host[:port][/path]`: probes speak HTTP without TLS.
pub(crate) fn check_http_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("`{url}` is not a usable health URL: {why}; expected http://host[:port]/path")
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("it must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    check_host_port(authority, false).map_err(|why| bad(&why))
}

pub(crate) fn check_tcp_address(address: &str) -> Result<(), String> {
    check_host_port(address, true).map_err(|why| {
        format!("`{address}` is not a TCP address: {why}; expected host:port like localhost:5432")
    })
}

fn check_host_port(authority: &str, port_required: bool) -> Result<(), String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("the host is missing".to_owned());
    }
    match port {
        None if port_required => Err("the port is missing".to_owned()),
        None => Ok(()),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(()),
            _ => Err(format!("`{port}` is not a port (1-65535)")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_addresses_are_checked() {
        assert!(check_http_url("http://localhost:3000/health").is_ok());
        assert!(check_http_url("http://example").is_ok());
        assert!(check_http_url("https://x").unwrap_err().contains("http://"));
        assert!(check_http_url("http://:80/").is_err());
        assert!(check_tcp_address("localhost:5432").is_ok());
        assert!(check_tcp_address("[::1]:80").is_ok());
        assert!(check_tcp_address("localhost")
            .unwrap_err()
            .contains("port is missing"));
        assert!(check_tcp_address("db:99999").is_err());
    }
}
