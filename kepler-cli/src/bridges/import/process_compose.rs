//! process-compose.yaml: each entry of `processes` becomes a service (or
//! `replicas`), with its dependencies, probes,
//! restart and shutdown settings.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::convert::{self, Paths};
use super::model::{Edge, Healthcheck, Hook, Restart, RestartDetails, Service};
use super::replicas::{replica_number_from, with_replica_vars};
use super::tree::{self, Value};
use super::{check_keys, read_text, Draft, Format, Loc, PendingEdge, Reading, Report};

const TOP_MAPPED: &[&str] = &["processes", "environment", "shell"];
const TOP_LEFT_OUT: &[(&str, &str)] = &[
    ("version", "Kepler's config has no version"),
    (
        "log_location",
        "Kepler stores every service's output in its state directory (`kepler logs`)",
    ),
    (
        "log_level",
        "the Kepler daemon's own log level comes from KEPLER_LOG",
    ),
    (
        "log_length",
        "Kepler keeps logs on disk, trimmed by `logs.max_size`",
    ),
    (
        "log_configuration",
        "Kepler keeps logs on disk, trimmed by `logs.max_size`",
    ),
    ("is_strict", "Kepler always refuses unknown keys"),
    (
        "vars",
        "Go template variables are not expanded by Kepler; replace {{.VAR}} uses by hand",
    ),
    (
        "env_cmds",
        "Kepler does not run commands to compute variables; use Lua (`!lua`) or environment",
    ),
    (
        "disable_env_expansion",
        "Kepler always expands ${VAR} in environment values",
    ),
    (
        "ordered_shutdown",
        "Kepler always stops dependents before what they depend on",
    ),
];

const PROCESS_MAPPED: &[&str] = &[
    "command",
    "entrypoint",
    "working_dir",
    "environment",
    "depends_on",
    "readiness_probe",
    "liveness_probe",
    "availability",
    "shutdown",
    "replicas",
    "disabled",
];
const PROCESS_LEFT_OUT: &[(&str, &str)] = &[
    ("description", "Kepler services have no description field"),
    (
        "namespace",
        "Kepler has no namespaces; one config is one stack",
    ),
    (
        "log_location",
        "Kepler stores output in its state directory (`kepler logs`)",
    ),
    (
        "log_configuration",
        "Kepler keeps logs on disk, trimmed by `logs.max_size`",
    ),
    (
        "is_daemon",
        "Kepler supervises processes that stay in the foreground; run it without forking",
    ),
    ("is_tty", "Kepler services have no terminal"),
    ("is_interactive", "Kepler services have no terminal"),
    (
        "ready_log_line",
        "Kepler cannot wait for a log line; a health check can tell readiness",
    ),
    ("launch_timeout_seconds", "Kepler has no launch timeout"),
    (
        "is_elevated",
        "run the service as a user with `user:` instead",
    ),
    ("vars", "Go template variables are not expanded by Kepler"),
    (
        "extends",
        "Kepler has no `extends`; YAML merge keys (`<<: *base`) do the same",
    ),
];

pub fn read(path: &Path, paths: &Paths, report: &mut Report) -> Result<Reading> {
    let text = read_text(path)?;
    let root = tree::parse_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let Some(processes) = root.get("processes").filter(|p| p.is_map()) else {
        bail!(
            "{}: no `processes:` mapping found; is it a {} file?",
            path.display(),
            Format::ProcessCompose
        );
    };
    check_keys(
        &root,
        path,
        "top-level",
        TOP_MAPPED,
        TOP_LEFT_OUT,
        Format::ProcessCompose,
        report,
    );
    let shell = shell(&root, path)?;
    let global_env = environment(root.get("environment"), path)?;
    let mut drafts = Vec::new();
    for entry in processes.entries() {
        let at = Loc::new(path, entry.line);
        drafts.push(process(
            &entry.key,
            &entry.value,
            at,
            &shell,
            &global_env,
            path,
            paths,
            report,
        )?);
    }
    Ok(Reading {
        drafts,
        inherits_environment: true,
    })
}

/// The shell process-compose runs commands with: `bash -c` unless `shell:`
/// says otherwise.
fn shell(root: &Value, path: &Path) -> Result<Vec<String>> {
    let Some(shell) = root.get("shell") else {
        return Ok(vec!["bash".into(), "-c".into()]);
    };
    let command = shell
        .get("shell_command")
        .and_then(Value::scalar)
        .unwrap_or("bash");
    let argument = shell
        .get("shell_argument")
        .and_then(Value::scalar)
        .unwrap_or("-c");
    if command.is_empty() {
        bail!(
            "{}:{}: shell.shell_command is empty",
            path.display(),
            shell.line
        );
    }
    Ok(vec![command.to_owned(), argument.to_owned()])
}

fn environment(node: Option<&Value>, path: &Path) -> Result<Vec<String>> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in node.items() {
        let entry = item.scalar().filter(|e| e.contains('=')).ok_or_else(|| {
            anyhow!(
                "{}:{}: environment entries are KEY=value, found {item}",
                path.display(),
                item.line
            )
        })?;
        // process-compose expands ${VAR} in the file as Kepler does.
        out.push(entry.to_owned());
    }
    if !node.is_map() && node.items().is_empty() && node.scalar().is_some() {
        bail!(
            "{}:{}: environment is a list of KEY=value",
            path.display(),
            node.line
        );
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn process(
    name: &str,
    node: &Value,
    at: Loc,
    shell: &[String],
    global_env: &[String],
    path: &Path,
    paths: &Paths,
    report: &mut Report,
) -> Result<Draft> {
    let what = format!("process `{name}`");
    let mut draft = Draft::new(name, what.clone(), at.clone());
    let err_at = |value: &Value, message: String| {
        anyhow!("{}:{}: {what}: {message}", path.display(), value.line)
    };
    let mut service = Service::default();
    if let Some(entrypoint) = node.get("entrypoint") {
        service.command = words(entrypoint)
            .ok_or_else(|| err_at(entrypoint, "entrypoint is a list of words".into()))?;
        if let Some(command) = node.get("command").and_then(Value::scalar) {
            service.command.push(command.to_owned());
        }
    } else if let Some(command) = node.get("command") {
        let line = command
            .scalar()
            .ok_or_else(|| err_at(command, "command is a shell line".into()))?;
        service.command = shell.iter().cloned().chain([line.to_owned()]).collect();
    } else {
        draft.skipped = Some("it has no `command`".into());
        return Ok(draft);
    }
    if let Some(dir) = node.get("working_dir").and_then(Value::scalar) {
        service.working_dir = Some(paths.rebase(dir));
    }
    service.environment = global_env.to_vec();
    service
        .environment
        .extend(environment(node.get("environment"), path)?);
    for dep in node
        .get("depends_on")
        .map(Value::entries)
        .unwrap_or_default()
    {
        let condition = dep
            .value
            .get("condition")
            .and_then(Value::scalar)
            .unwrap_or("process_started");
        let edge = match condition {
            "process_started" => Edge::on(Edge::STARTED),
            "process_healthy" => Edge::on(Edge::HEALTHY),
            "process_completed_successfully" => Edge::on(Edge::COMPLETED),
            "process_completed" => Edge {
                wait: Some(true),
                ..Edge::on(Edge::STOPPED)
            },
            "process_log_ready" => {
                report.drop_key(
                    Loc::new(path, dep.line),
                    format!("{what} depends_on.{} condition process_log_ready", dep.key),
                    "Kepler cannot wait for a log line; it waits for the process to start instead",
                );
                Edge::on(Edge::STARTED)
            }
            other => {
                return Err(err_at(
                    &dep.value,
                    format!("`{other}` is not a depends_on condition"),
                ))
            }
        };
        draft.deps.push(PendingEdge {
            target: dep.key.clone(),
            edge,
            at: Loc::new(path, dep.line),
        });
    }
    service.healthcheck = probes(node, &what, path, report)?;
    service.restart = availability(node.get("availability"), &what, path, report)?;
    if let Some(shutdown) = node.get("shutdown") {
        if let Some(signal) = shutdown.get("signal").and_then(Value::scalar) {
            service.stop_signal = Some(convert::signal_name(signal).ok_or_else(|| {
                err_at(
                    shutdown,
                    format!("shutdown.signal `{signal}` is not a signal"),
                )
            })?);
        }
        if let Some(timeout) = shutdown.get("timeout_seconds").and_then(Value::scalar) {
            let secs: u64 = timeout.parse().map_err(|_| {
                err_at(
                    shutdown,
                    format!("shutdown.timeout_seconds `{timeout}` is not a whole number"),
                )
            })?;
            service.stop_grace_period = Some(convert::duration_secs(secs));
        }
        if let Some(command) = shutdown.get("command").and_then(Value::scalar) {
            service.hooks.insert(
                "pre_stop".into(),
                Hook {
                    run: command.to_owned(),
                },
            );
            report.note(
                Some(Loc::new(path, shutdown.line)),
                format!("{what} shutdown.command became a pre_stop hook; Kepler still sends the stop signal after it"),
            );
        }
        check_keys(
            shutdown,
            path,
            &format!("{what} shutdown"),
            &["signal", "timeout_seconds", "command"],
            &[("parent_only", "Kepler signals the whole process group")],
            Format::ProcessCompose,
            report,
        );
    }
    if let Some(disabled) = node.entries().iter().find(|e| e.key == "disabled") {
        if disabled.value.scalar().and_then(convert::boolean) == Some(true) {
            report.drop_key(
                Loc::new(path, disabled.line),
                format!("{what} disabled"),
                "`kepler start` starts every service; start the others by name instead",
            );
        }
    }
    let replicas = match node.get("replicas") {
        Some(value) => value
            .scalar()
            .and_then(|r| r.parse::<u32>().ok())
            .filter(|r| *r >= 1)
            .ok_or_else(|| err_at(value, "replicas is a whole number of at least 1".into()))?,
        None => 1,
    };
    if replicas > 1 {
        // process-compose numbers copies from 0 in PC_REPLICA_NUM.
        service.command = with_replica_vars(
            std::mem::take(&mut service.command),
            &[("PC_REPLICA_NUM".to_owned(), replica_number_from(0))],
        );
        report.note(
            Some(at),
            format!("{what} replicas = {replicas}: each instance gets PC_REPLICA_NUM (from 0, as process-compose counts) from KEPLER_REPLICA"),
        );
    }
    draft.service = Some(service);
    draft.replicas = replicas;
    check_keys(
        node,
        path,
        &what,
        PROCESS_MAPPED,
        PROCESS_LEFT_OUT,
        Format::ProcessCompose,
        report,
    );
    Ok(draft)
}

fn words(value: &Value) -> Option<Vec<String>> {
    value
        .items()
        .iter()
        .map(|w| w.scalar().map(str::to_owned))
        .collect()
}

/// The readiness probe (or the liveness probe when there is none) becomes
/// the health check; Kepler has one check per service.
fn probes(
    node: &Value,
    what: &str,
    path: &Path,
    report: &mut Report,
) -> Result<Option<Healthcheck>> {
    let readiness = node.get("readiness_probe");
    let liveness = node.get("liveness_probe");
    let (probe, key) = match (readiness, liveness) {
        (Some(r), Some(l)) => {
            report.drop_key(
                Loc::new(path, l.line),
                format!("{what} liveness_probe"),
                "Kepler has one health check per service (the readiness probe) and does not restart unhealthy services",
            );
            (r, "readiness_probe")
        }
        (Some(r), None) => (r, "readiness_probe"),
        (None, Some(l)) => {
            report.note(
                Some(Loc::new(path, l.line)),
                format!("{what} liveness_probe became the health check; Kepler marks the service unhealthy but does not restart it"),
            );
            (l, "liveness_probe")
        }
        (None, None) => return Ok(None),
    };
    let what = format!("{what} {key}");
    let err = |message: String| anyhow!("{}:{}: {what}: {message}", path.display(), probe.line);
    let mut check = Healthcheck::default();
    if let Some(exec) = probe.get("exec") {
        let command = exec
            .get("command")
            .and_then(Value::scalar)
            .ok_or_else(|| err("exec.command is missing".into()))?;
        check.test = Some(vec!["sh".into(), "-c".into(), command.to_owned()]);
        check_keys(
            exec,
            path,
            &format!("{what} exec"),
            &["command"],
            &[(
                "working_dir",
                "Kepler runs health checks in the service's working_dir",
            )],
            Format::ProcessCompose,
            report,
        );
    } else if let Some(http) = probe.get("http_get") {
        let scheme = http.get("scheme").and_then(Value::scalar).unwrap_or("http");
        if scheme != "http" {
            return Err(err(format!(
                "http_get.scheme `{scheme}`: Kepler's HTTP checks speak plain http only"
            )));
        }
        let host = http
            .get("host")
            .and_then(Value::scalar)
            .unwrap_or("127.0.0.1");
        let port = http
            .get("port")
            .and_then(Value::scalar)
            .ok_or_else(|| err("http_get.port is missing".into()))?;
        let path_part = http.get("path").and_then(Value::scalar).unwrap_or("/");
        let slash = if path_part.starts_with('/') { "" } else { "/" };
        check.http = Some(format!("http://{host}:{port}{slash}{path_part}"));
        check_keys(
            http,
            path,
            &format!("{what} http_get"),
            &["scheme", "host", "port", "path"],
            &[
                ("headers", "Kepler's HTTP check sends no custom headers"),
                ("status_code", "Kepler counts any 2xx answer as healthy"),
            ],
            Format::ProcessCompose,
            report,
        );
    } else {
        return Err(err("a probe needs `exec` or `http_get`".into()));
    }
    let seconds = |key: &str| -> Result<Option<String>> {
        probe
            .get(key)
            .and_then(Value::scalar)
            .map(|v| {
                v.parse::<u64>()
                    .map(convert::duration_secs)
                    .map_err(|_| err(format!("{key} `{v}` is not a whole number")))
            })
            .transpose()
    };
    check.start_period = seconds("initial_delay_seconds")?;
    check.interval = seconds("period_seconds")?;
    check.timeout = seconds("timeout_seconds")?;
    if let Some(threshold) = probe.get("failure_threshold").and_then(Value::scalar) {
        check.retries = Some(threshold.parse().map_err(|_| {
            err(format!(
                "failure_threshold `{threshold}` is not a whole number"
            ))
        })?);
    }
    if let Some(success) = probe
        .entries()
        .iter()
        .find(|e| e.key == "success_threshold")
    {
        if success.value.scalar() != Some("1") {
            report.drop_key(
                Loc::new(path, success.line),
                format!("{what} success_threshold"),
                "one passing check makes a Kepler service healthy",
            );
        }
    }
    check_keys(
        probe,
        path,
        &what,
        &[
            "exec",
            "http_get",
            "initial_delay_seconds",
            "period_seconds",
            "timeout_seconds",
            "failure_threshold",
            "success_threshold",
        ],
        &[],
        Format::ProcessCompose,
        report,
    );
    Ok(Some(check))
}

fn availability(
    node: Option<&Value>,
    what: &str,
    path: &Path,
    report: &mut Report,
) -> Result<Option<Restart>> {
    let Some(node) = node else {
        return Ok(None);
    };
    let what = format!("{what} availability");
    let err = |message: String| anyhow!("{}:{}: {what}: {message}", path.display(), node.line);
    let mut details = RestartDetails {
        policy: Restart::NO,
        ..RestartDetails::default()
    };
    if let Some(restart) = node.get("restart").and_then(Value::scalar) {
        details.policy = match restart {
            "always" => Restart::ALWAYS,
            "on_failure" => Restart::ON_FAILURE,
            "no" => Restart::NO,
            "exit_on_failure" => {
                report.drop_key(
                    Loc::new(path, node.line),
                    format!("{what} restart exit_on_failure"),
                    "Kepler does not stop the whole stack when one service fails; the service is not restarted",
                );
                Restart::NO
            }
            other => {
                return Err(err(format!(
                    "restart `{other}` is not always, on_failure, exit_on_failure or no"
                )))
            }
        };
    }
    if details.policy != Restart::NO {
        if let Some(backoff) = node.get("backoff_seconds").and_then(Value::scalar) {
            let secs: u64 = backoff
                .parse()
                .map_err(|_| err(format!("backoff_seconds `{backoff}` is not a whole number")))?;
            // process-compose waits the same time before every restart.
            details.delay = Some(convert::duration_secs(secs));
            details.max_delay = Some(convert::duration_secs(secs));
        }
        if let Some(max) = node.get("max_restarts").and_then(Value::scalar) {
            let max: u32 = max
                .parse()
                .map_err(|_| err(format!("max_restarts `{max}` is not a whole number")))?;
            if max > 0 {
                details.max_attempts = Some(max);
            }
        }
    }
    check_keys(
        node,
        path,
        &what,
        &["restart", "backoff_seconds", "max_restarts"],
        &[
            (
                "exit_on_end",
                "Kepler does not stop the stack when one service ends",
            ),
            (
                "exit_on_skipped",
                "Kepler does not stop the stack when one service is skipped",
            ),
        ],
        Format::ProcessCompose,
        report,
    );
    Ok(Some(Restart::from_details(details)))
}
