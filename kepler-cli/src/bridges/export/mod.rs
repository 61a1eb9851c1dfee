//! `kepler export`: the baked config as systemd units, a Nomad job or
//! Kubernetes manifests. The config is baked by `kepler-daemon check
//! --json` (no daemon, nothing written to the state directory), which
//! prints the stable JSON view of `kepler_protocol::config_view`; one module
//! per target turns that into files and a [`Notes`] report of what the
//! target cannot express.

pub mod kubernetes;
pub mod nomad;
pub mod systemd;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use kepler_protocol::config_view::{ConfigView, ServiceView, CONFIG_VIEW_VERSION};

use crate::daemon_binary::daemon_binary;

/// Bakes `config` with this process's environment and returns its view.
pub fn load_view(config: &Path) -> Result<ConfigView> {
    let binary = daemon_binary()?;
    let output = Command::new(&binary)
        .arg("check")
        .arg("--json")
        .arg(config)
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        // The bake's errors, one `file:line:column: path: message` each.
        bail!(
            "{} is not a valid config:\n{}",
            config.display(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    let view: ConfigView = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{} printed a config view this kepler cannot read; are both binaries from the same build?",
            binary.display()
        )
    })?;
    if view.version != CONFIG_VIEW_VERSION {
        bail!(
            "{} prints config view version {}, this kepler reads version {CONFIG_VIEW_VERSION}; install both binaries from the same build",
            binary.display(),
            view.version
        );
    }
    Ok(view)
}

/// How many copies of a service the target should run: its `replicas:`,
/// else 1.
pub fn replicas(service: &ServiceView) -> u32 {
    service.replicas.unwrap_or(1)
}

/// The instances of a service as Kepler names them, with their numbers:
/// `[(web, None)]` for a plain service, `[(web.1, Some(1)), …]` with
/// `replicas:`.
pub fn instances(name: &str, service: &ServiceView) -> Vec<(String, Option<u32>)> {
    match service.replicas {
        None => vec![(name.to_owned(), None)],
        Some(count) => (1..=count)
            .map(|i| (format!("{name}.{i}"), Some(i)))
            .collect(),
    }
}

/// A name for the stack: `--name`, else the config directory's name, made
/// of lowercase letters, digits and `-` so every target accepts it.
pub fn stack_name(given: Option<&str>, view: &ConfigView) -> String {
    let raw = given.map(str::to_owned).unwrap_or_else(|| {
        view.config_file
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| "kepler".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    dns_label(&raw)
}

/// A DNS-1123 label (Kubernetes names, Nomad ids, unit prefixes): lowercase
/// letters, digits and `-`, starting and ending with a letter or digit, at
/// most 63 characters.
pub fn dns_label(raw: &str) -> String {
    let mapped: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut label: String = mapped.trim_matches('-').chars().take(63).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        "kepler".to_owned()
    } else {
        label
    }
}

/// The program of `argv` as an absolute path: how systemd and Nomad's
/// raw_exec want it. A bare name is searched like the daemon searches it
/// (the service's PATH, else the standard directories); `None` when it is
/// not found on this machine.
pub fn program_path(service: &ServiceView) -> Option<PathBuf> {
    let program = service.command.first()?;
    if program.contains('/') {
        let path = service.working_dir.join(program);
        return Some(crate::bridges::import::normalize(&path));
    }
    let search = service.environment.get("PATH").map_or(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        String::as_str,
    );
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What an export did: each service and what it became, what the target
/// cannot express, and warnings.
#[derive(Debug, Default)]
pub struct Notes {
    pub entries: Vec<(String, String)>,
    pub not_expressed: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

impl Notes {
    pub fn entry(&mut self, service: &str, became: impl Into<String>) {
        self.entries.push((service.to_owned(), became.into()));
    }

    pub fn lost(&mut self, service: &str, what: impl Into<String>) {
        self.not_expressed.push((service.to_owned(), what.into()));
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }

    /// The not-expressed lines of one service.
    pub fn lost_by<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a str> {
        self.not_expressed
            .iter()
            .filter(move |(s, _)| s == service)
            .map(|(_, what)| what.as_str())
    }
}

impl fmt::Display for Notes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (service, became) in &self.entries {
            writeln!(f, "  {service} -> {became}")?;
        }
        if !self.not_expressed.is_empty() {
            writeln!(f, "not expressed:")?;
            for (service, what) in &self.not_expressed {
                writeln!(f, "  {service}: {what}")?;
            }
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// Milliseconds as a duration for humans and systemd: `100ms`, `30s`.
pub fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Whole seconds, rounded up, for targets that count seconds.
pub fn seconds_up(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `http://host[:port][/path]` as (host, port, path).
pub fn split_http_url(url: &str) -> (String, u16, String) {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
    let (host, port) = split_host_port(authority, 80);
    (host, port, path.to_owned())
}

/// `host:port` (IPv6 in brackets) with a default port.
pub fn split_host_port(authority: &str, default: u16) -> (String, u16) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
            host.trim_matches(['[', ']']).to_owned(),
            port.parse().unwrap_or(default),
        ),
        _ => (authority.trim_matches(['[', ']']).to_owned(), default),
    }
}

/// Loopback hosts: a probe of the pod or task itself.
pub fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Writes `contents` to `path` unless it exists and `force` is off.
pub fn write_file(path: &Path, contents: &str, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists; use --force to replace it, or -o to write elsewhere",
            path.display()
        );
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("My_App.v2"), "my-app-v2");
        assert_eq!(dns_label("--x--"), "x");
        assert_eq!(dns_label("___"), "kepler");
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_http_url("http://localhost:3000/health"),
            ("localhost".into(), 3000, "/health".into())
        );
        assert_eq!(
            split_http_url("http://example"),
            ("example".into(), 80, "/".into())
        );
        assert_eq!(split_host_port("[::1]:5432", 0), ("::1".into(), 5432));
    }
}
