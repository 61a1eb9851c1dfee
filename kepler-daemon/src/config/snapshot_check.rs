//! The checks a snapshot must pass when it did not come from this process's
//! own bake: the bake worker's answer (the worker runs as the config's owner,
//! who can make it print anything) and a snapshot read back from disk.
//!
//! Everything the bake guarantees is checked again on the finished snapshot:
//! service names by the file-name rule (they become log file names, so never
//! `/`, `..`, NUL or control characters), dependency targets, conditions and
//! cycles, non-empty commands, absolute paths, environment names, health
//! probe addresses, restart settings, log bounds and the number of services. Types
//! (durations, sizes, signals, users) are checked by decoding itself. Size is
//! bounded before decoding: both the worker's answer and the file on disk
//! are read with [`MAX_SNAPSHOT_BYTES`] counted while reading.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::graph::find_cycles;
use super::healthcheck::{check_http_url, check_tcp_address};
use super::logs::{MAX_BUFFER_SIZE, MIN_MAX_SIZE};
use super::snapshot::{
    BakedConfig, HealthProbe, HookAction, HookConfig, LogConfig, RestartPolicy, ServiceConfig,
};
use super::values::{
    is_valid_service_name, numbered_suffix, split_instance_name, MAX_REPLICAS, SERVICE_NAME_RULE,
};

/// Most services one config may have.
pub const MAX_SERVICES: usize = 16_384;
/// Most instances one config may run: each service counts as many times as
/// it has replicas (`replicas:` or `kepler scale`).
pub const MAX_INSTANCES: u64 = 16_384;

/// How many instances `services` run with their written `replicas:`.
pub fn instance_count<'a>(services: impl IntoIterator<Item = &'a ServiceConfig>) -> u64 {
    services
        .into_iter()
        .map(|s| u64::from(s.replicas.unwrap_or(1)))
        .sum()
}
/// Largest baked snapshot, and largest answer of a bake worker (which also
/// carries the config's text and env files).
pub const MAX_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024;
/// Problems listed before the rest are summarised.
const MAX_PROBLEMS: usize = 20;

/// Why a snapshot was refused: every problem found, each with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct SnapshotProblems {
    pub problems: Vec<String>,
}

struct Problems {
    found: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, at: impl std::fmt::Display, message: impl std::fmt::Display) {
        if self.found.len() < MAX_PROBLEMS {
            self.found.push(format!("{at}: {message}"));
        } else {
            self.more += 1;
        }
    }
}

/// A path the daemon may use as is: absolute, no `.` or `..`, no NUL.
fn check_path(path: &Path, at: &str, problems: &mut Problems) {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.contains(&0) {
        problems.push(at, "contains a NUL byte");
    } else if !path.is_absolute() {
        problems.push(at, format!("`{}` is not an absolute path", path.display()));
    } else if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        problems.push(at, format!("`{}` is not a normalised path", path.display()));
    }
}

fn check_command(argv: &[String], at: &str, problems: &mut Problems) {
    match argv.first() {
        None => problems.push(at, "the command is empty"),
        Some(program) if program.trim().is_empty() => {
            problems.push(at, "the program name is empty")
        }
        Some(_) => {}
    }
}

fn check_environment(env: &BTreeMap<String, String>, at: &str, problems: &mut Problems) {
    for key in env.keys() {
        if key.is_empty() || key.contains('\0') {
            problems.push(
                at,
                format!("`{}` is not a variable name", key.escape_debug()),
            );
        }
    }
}

fn check_hook(hook: &HookConfig, at: &str, problems: &mut Problems) {
    match &hook.action {
        HookAction::Run(script) if script.trim().is_empty() => {
            problems.push(format!("{at}.run"), "the script is empty")
        }
        HookAction::Run(_) => {}
        HookAction::Command(argv) => check_command(argv, &format!("{at}.command"), problems),
    }
    check_path(&hook.working_dir, &format!("{at}.working_dir"), problems);
    if let Some(env_file) = &hook.env_file {
        check_path(env_file, &format!("{at}.env_file"), problems);
    }
    check_environment(&hook.environment, &format!("{at}.environment"), problems);
}

/// The log bounds a bake enforces (the writer clamps them again).
fn check_logs(logs: &LogConfig, at: &str, problems: &mut Problems) {
    if logs.buffer_size.0 > MAX_BUFFER_SIZE.0 {
        problems.push(
            format!("{at}.buffer_size"),
            format!("{} is more than {MAX_BUFFER_SIZE}", logs.buffer_size),
        );
    }
    if let Some(max) = logs.max_size.filter(|max| max.0 < MIN_MAX_SIZE.0) {
        problems.push(
            format!("{at}.max_size"),
            format!("{max} is less than {MIN_MAX_SIZE}"),
        );
    }
}

/// Checks `config` as described in the module docs.
pub fn check_snapshot(config: &BakedConfig) -> Result<(), SnapshotProblems> {
    let mut problems = Problems {
        found: Vec::new(),
        more: 0,
    };
    check_path(&config.config_file, "config_file", &mut problems);
    if config.services.is_empty() {
        problems.push("services", "no services are defined");
    }
    if config.services.len() > MAX_SERVICES {
        problems.push(
            "services",
            format!(
                "{} services, more than the {MAX_SERVICES} a config may have",
                config.services.len()
            ),
        );
    }
    let instances = instance_count(config.services.values());
    if instances > MAX_INSTANCES {
        problems.push(
            "services",
            format!("{instances} instances, more than the {MAX_INSTANCES} a config may run"),
        );
    }
    check_logs(&config.kepler.logs, "kepler.logs", &mut problems);
    if let Some((key, message)) = config.kepler.metrics.problem() {
        problems.push(format!("kepler.metrics.{key}"), message);
    }
    for (kind, hook) in &config.kepler.hooks {
        check_hook(
            hook,
            &format!("kepler.hooks.{}", kind.name()),
            &mut problems,
        );
    }
    for (name, service) in &config.services {
        if !is_valid_service_name(name) {
            problems.push(
                format!("services.{}", name.escape_debug()),
                format!("not a valid service name ({SERVICE_NAME_RULE})"),
            );
            continue;
        }
        let at = format!("services.{name}");
        if service.replicas.is_some_and(|n| n > MAX_REPLICAS) {
            problems.push(
                format!("{at}.replicas"),
                format!("more than the {MAX_REPLICAS} replicas a service may run"),
            );
        }
        // An instance name must never be a service's name too.
        if let Some(base) = numbered_suffix(name) {
            if config
                .services
                .get(base)
                .is_some_and(|s| s.replicas.is_some())
            {
                problems.push(
                    &at,
                    format!("named like an instance of the replicated `{base}`"),
                );
            }
        }
        check_command(&service.command, &format!("{at}.command"), &mut problems);
        check_path(
            &service.working_dir,
            &format!("{at}.working_dir"),
            &mut problems,
        );
        if let Some(env_file) = &service.env_file {
            check_path(env_file, &format!("{at}.env_file"), &mut problems);
        }
        check_environment(
            &service.environment,
            &format!("{at}.environment"),
            &mut problems,
        );
        for (target, edge) in &service.depends_on {
            let edge_at = format!("{at}.depends_on.{}", target.escape_debug());
            match config.services.get(target) {
                None if split_instance_name(target)
                    .is_some_and(|(base, _)| config.services.contains_key(base)) =>
                {
                    problems.push(&edge_at, "an instance, not a service")
                }
                None => problems.push(&edge_at, "not a service in this config"),
                Some(_) if target == name => {
                    problems.push(&edge_at, "a service cannot depend on itself")
                }
                Some(dependency) => {
                    if edge.condition.needs_healthcheck() && dependency.healthcheck.is_none() {
                        problems.push(
                            &edge_at,
                            format!(
                                "{} needs a healthcheck on `{target}`",
                                edge.condition.name()
                            ),
                        );
                    }
                }
            }
            if edge.exit_code.is_some() && !edge.condition.accepts_exit_code() {
                problems.push(
                    &edge_at,
                    "`exit_code` only applies to service_failed or service_stopped",
                );
            }
        }
        check_logs(&service.logs, &format!("{at}.logs"), &mut problems);
        let restart = &service.restart;
        if restart.delay > restart.max_delay {
            problems.push(
                format!("{at}.restart"),
                "`delay` is longer than `max_delay`",
            );
        }
        if !restart.watch.is_empty() && restart.policy == RestartPolicy::No {
            problems.push(
                format!("{at}.restart.watch"),
                "`watch` needs a restart policy",
            );
        }
        for pattern in &restart.watch {
            if globset::Glob::new(pattern).is_err() {
                problems.push(
                    format!("{at}.restart.watch"),
                    format!("`{pattern}` is not a glob pattern"),
                );
            }
        }
        if let Some(health) = &service.healthcheck {
            let health_at = format!("{at}.healthcheck");
            match &health.probe {
                HealthProbe::Test(argv) => check_command(argv, &health_at, &mut problems),
                HealthProbe::Http(url) => {
                    if let Err(message) = check_http_url(url) {
                        problems.push(&health_at, message);
                    }
                }
                HealthProbe::Tcp(address) => {
                    if let Err(message) = check_tcp_address(address) {
                        problems.push(&health_at, message);
                    }
                }
            }
            if health.interval.0.is_zero() {
                problems.push(&health_at, "`interval` must be longer than 0s");
            }
        }
        for (kind, hook) in &service.hooks {
            check_hook(hook, &format!("{at}.hooks.{}", kind.name()), &mut problems);
        }
    }
    let graph: BTreeMap<&str, Vec<&str>> = config
        .services
        .iter()
        .map(|(name, service)| {
            let targets = service
                .depends_on
                .keys()
                .map(String::as_str)
                .filter(|to| *to != name && config.services.contains_key(*to))
                .collect();
            (name.as_str(), targets)
        })
        .collect();
    for cycle in find_cycles(&graph) {
        problems.push(
            "services",
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    if problems.found.is_empty() {
        return Ok(());
    }
    if problems.more > 0 {
        problems.found.push(format!("and {} more", problems.more));
    }
    Err(SnapshotProblems {
        problems: problems.found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{bake_source, ServiceConfig};

    fn baked(yaml: &str) -> BakedConfig {
        let env = BTreeMap::new();
        bake_source(Path::new("/srv/app/kepler.yaml"), yaml.to_owned(), &env)
            .unwrap()
            .config
    }

    fn web() -> BakedConfig {
        baked("services:\n  web:\n    command: [\"./web\"]\n  db:\n    command: [db]\n")
    }

    fn refused(config: &BakedConfig, fragment: &str) {
        let err = check_snapshot(config).unwrap_err().to_string();
        assert!(err.contains(fragment), "{err}");
    }

    #[test]
    fn a_baked_config_passes() {
        check_snapshot(&web()).unwrap();
    }

    #[test]
    fn forged_service_names_are_refused() {
        for name in [
            "../../etc/x",
            "a/b",
            "..",
            "",
            "a\0b",
            "a\nb",
            "-x",
            "_kepler",
        ] {
            let mut config = web();
            let service: ServiceConfig = config.services["web"].clone();
            config.services.insert(name.to_owned(), service);
            refused(&config, "not a valid service name");
        }
    }

    #[test]
    fn dangling_and_cyclic_dependencies_are_refused() {
        let mut config = baked(
            "services:\n  a:\n    command: [a]\n    depends_on: [b]\n  b:\n    command: [b]\n",
        );
        let edge = config.services["a"].depends_on["b"].clone();
        config
            .services
            .get_mut("b")
            .unwrap()
            .depends_on
            .insert("a".into(), edge.clone());
        refused(&config, "dependency cycle: a -> b");
        config
            .services
            .get_mut("b")
            .unwrap()
            .depends_on
            .insert("ghost".into(), edge);
        refused(&config, "services.b.depends_on.ghost: not a service");
    }

    #[test]
    fn relative_paths_and_empty_commands_are_refused() {
        let mut config = web();
        config.config_file = "kepler.yaml".into();
        refused(&config, "config_file");
        let mut config = web();
        config.services.get_mut("web").unwrap().working_dir = "/srv/../etc".into();
        refused(&config, "not a normalised path");
        let mut config = web();
        config.services.get_mut("web").unwrap().command.clear();
        refused(&config, "services.web.command: the command is empty");
    }

    #[test]
    fn log_bounds_past_what_a_bake_allows_are_refused() {
        let mut config = web();
        config.services.get_mut("web").unwrap().logs.buffer_size =
            crate::config::ByteSize(500 << 30);
        refused(&config, "services.web.logs.buffer_size");
        let mut config = web();
        config.kepler.logs.max_size = Some(crate::config::ByteSize(1));
        refused(&config, "kepler.logs.max_size");
    }

    #[test]
    fn replica_counts_and_instance_names_past_what_a_bake_allows_are_refused() {
        let mut config = web();
        config.services.get_mut("web").unwrap().replicas = Some(MAX_REPLICAS + 1);
        refused(&config, "services.web.replicas: more than the 1024");
        let mut config = web();
        config.services.get_mut("web").unwrap().replicas = Some(2);
        let service = config.services["web"].clone();
        config.services.insert("web.7".into(), service.clone());
        refused(&config, "services.web.7: named like an instance");
        let mut config = web();
        for index in 0..=MAX_INSTANCES / u64::from(MAX_REPLICAS) {
            let mut service = service.clone();
            service.replicas = Some(MAX_REPLICAS);
            config.services.insert(format!("s{index}"), service);
        }
        refused(
            &config,
            &format!("instances, more than the {MAX_INSTANCES}"),
        );
    }

    #[test]
    fn metrics_settings_past_what_a_bake_allows_are_refused() {
        use crate::config::HumanDuration;
        let mut config = web();
        config.kepler.metrics.interval = HumanDuration::from_millis(1);
        refused(&config, "kepler.metrics.interval");
        let mut config = web();
        config.kepler.metrics.retention = HumanDuration::from_secs(365 * 86_400);
        refused(&config, "kepler.metrics.retention");
        let mut config = web();
        config.kepler.metrics.retention = HumanDuration::from_millis(200);
        config.kepler.metrics.interval = HumanDuration::from_secs(1);
        refused(&config, "kepler.metrics.retention");
    }

    #[test]
    fn too_many_services_are_refused() {
        let mut config = web();
        let service = config.services["web"].clone();
        for index in 0..=MAX_SERVICES {
            config.services.insert(format!("s{index}"), service.clone());
        }
        refused(&config, &format!("more than the {MAX_SERVICES}"));
    }
}
