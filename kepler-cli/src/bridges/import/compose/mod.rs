//! docker-compose.yml: services that name their command (`command` or
//! `entrypoint`) become native services running it; the image is not
//! used. Services that rely on their image's default command are listed as
//! not imported.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

mod fields;
mod resources;

use super::convert::{self, Paths};
use super::model::{Hook, Limits, Service};
use super::tree::{self, Value};
use super::{check_keys, read_text, sibling, Draft, Format, Loc, Reading, Report};
use fields::{
    dependencies, env_file, environment, healthcheck, replicas, restart_policy, runtime_argv, words,
};

const SERVICE_MAPPED: &[&str] = &[
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "depends_on",
    "healthcheck",
    "restart",
    "stop_signal",
    "stop_grace_period",
    "working_dir",
    "user",
    "image",
    "build",
    "deploy",
    "scale",
    "ulimits",
    "mem_limit",
    "memswap_limit",
    "cpus",
    "cpu_quota",
    "cpu_period",
    "pids_limit",
    "post_start",
    "pre_stop",
];

const CONTAINER: &str =
    "a container setting; Kepler runs the command as a native process on this machine";
const NETWORK: &str =
    "the service shares this machine's network; ports are whatever the process listens on";
const SERVICE_LEFT_OUT: &[(&str, &str)] = &[
    ("ports", NETWORK),
    ("expose", NETWORK),
    ("networks", NETWORK),
    ("network_mode", NETWORK),
    ("extra_hosts", NETWORK),
    ("dns", NETWORK),
    ("dns_search", NETWORK),
    ("dns_opt", NETWORK),
    ("hostname", NETWORK),
    ("domainname", NETWORK),
    ("mac_address", NETWORK),
    ("links", NETWORK),
    ("external_links", NETWORK),
    (
        "volumes",
        "the process sees this machine's files directly; there is nothing to mount",
    ),
    (
        "volumes_from",
        "the process sees this machine's files directly; there is nothing to mount",
    ),
    (
        "tmpfs",
        "the process sees this machine's files directly; there is nothing to mount",
    ),
    (
        "secrets",
        "there is no secret store; pass secrets through env_file or environment",
    ),
    (
        "configs",
        "the process reads its config files from this machine directly",
    ),
    ("container_name", CONTAINER),
    ("labels", CONTAINER),
    ("annotations", CONTAINER),
    (
        "logging",
        "Kepler stores output in its state directory; read it with `kepler logs`",
    ),
    ("cap_add", CONTAINER),
    ("cap_drop", CONTAINER),
    ("privileged", CONTAINER),
    ("security_opt", CONTAINER),
    ("tty", "Kepler services have no terminal"),
    (
        "stdin_open",
        "Kepler services read no input (stdin is /dev/null)",
    ),
    ("init", "Kepler reaps the processes of every service itself"),
    ("pid", CONTAINER),
    ("ipc", CONTAINER),
    ("uts", CONTAINER),
    ("userns_mode", CONTAINER),
    ("cgroup", CONTAINER),
    ("cgroup_parent", CONTAINER),
    ("devices", CONTAINER),
    ("device_cgroup_rules", CONTAINER),
    ("gpus", CONTAINER),
    ("sysctls", CONTAINER),
    ("shm_size", CONTAINER),
    ("read_only", CONTAINER),
    ("runtime", CONTAINER),
    ("isolation", CONTAINER),
    ("platform", CONTAINER),
    ("pull_policy", CONTAINER),
    (
        "profiles",
        "Kepler has no profiles; `kepler start NAME...` starts a subset",
    ),
    ("mem_reservation", CONTAINER),
    (
        "cpu_shares",
        "Kepler has no relative CPU weight; limits.cpus caps CPU time",
    ),
    ("cpuset", "Kepler has no CPU pinning"),
    ("oom_score_adj", CONTAINER),
    ("oom_kill_disable", CONTAINER),
    (
        "group_add",
        "Kepler runs a service with its user's groups; `group` sets the primary group",
    ),
    (
        "develop",
        "Compose Watch syncs files into a container; use restart.watch to restart on changes",
    ),
    ("attach", "`kepler start` shows the output of every service"),
    (
        "extends",
        "Kepler has no `extends`; YAML merge keys (`<<: *base`) do the same",
    ),
];

const TOP_LEFT_OUT: &[(&str, &str)] = &[
    ("version", "Kepler's config has no version"),
    ("name", "a Kepler config is named by its file"),
    ("networks", NETWORK),
    (
        "volumes",
        "the processes see this machine's files directly; there is nothing to mount",
    ),
    (
        "secrets",
        "there is no secret store; pass secrets through env_file or environment",
    ),
    (
        "configs",
        "the processes read their config files from this machine directly",
    ),
    (
        "include",
        "included files are not read; import each one on its own",
    ),
];

pub fn read(path: &Path, paths: &Paths, report: &mut Report) -> Result<Reading> {
    let text = read_text(path)?;
    let root = tree::parse_yaml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let Some(services) = root.get("services").filter(|s| s.is_map()) else {
        bail!(
            "{}: no `services:` mapping found; is it a {} file?",
            path.display(),
            Format::Compose
        );
    };
    let mut top_mapped = vec!["services"];
    top_mapped.extend(
        root.entries()
            .iter()
            .filter(|e| e.key.starts_with("x-"))
            .map(|e| e.key.as_str()),
    );
    check_keys(
        &root,
        path,
        "top-level",
        &top_mapped,
        TOP_LEFT_OUT,
        Format::Compose,
        report,
    );
    if sibling(path, ".env").is_file() {
        report.note(
            None,
            "Compose substitutes ${VAR} from the .env file beside it; Kepler expands ${VAR} in environment values from the environment of whoever first runs the config (or the service's env_file)",
        );
    }
    let mut drafts = Vec::new();
    for entry in services.entries() {
        let at = Loc::new(path, entry.line);
        drafts.push(service(&entry.key, &entry.value, at, path, paths, report)?);
    }
    Ok(Reading {
        drafts,
        inherits_environment: false,
    })
}

fn service(
    name: &str,
    node: &Value,
    at: Loc,
    path: &Path,
    paths: &Paths,
    report: &mut Report,
) -> Result<Draft> {
    let what = format!("service `{name}`");
    let mut draft = Draft::new(name, what.clone(), at.clone());
    let err = |value: &Value, message: String| {
        anyhow!("{}:{}: {what}: {message}", path.display(), value.line)
    };
    let line_of = |key: &str| {
        node.entries()
            .iter()
            .find(|e| e.key == key)
            .map_or(node.line, |e| e.line)
    };
    let mut argv = Vec::new();
    for key in ["entrypoint", "command"] {
        if let Some(value) = node.get(key) {
            argv.extend(words(value).map_err(|m| err(value, format!("{key}: {m}")))?);
        }
    }
    if argv.is_empty() {
        draft.skipped = Some("it has no `command` or `entrypoint` (it runs its image's default command, which Kepler cannot see)".into());
        return Ok(draft);
    }
    for key in ["image", "build"] {
        if node.get(key).is_some() {
            report.drop_key(
                Loc::new(path, line_of(key)),
                format!("{what} {key}"),
                "the image is not used: the command runs natively, so the programs it names must be installed on this machine",
            );
        }
    }
    let mut service = Service {
        command: runtime_argv(argv),
        ..Service::default()
    };
    let mut limits = Limits::default();
    resources::read(node, &what, path, report, &mut limits).map_err(|m| err(node, m))?;
    if let Some(dir) = node.get("working_dir").and_then(Value::scalar) {
        service.working_dir = Some(dir.to_owned());
        report.note(
            Some(Loc::new(path, line_of("working_dir"))),
            format!("{what} working_dir `{dir}` was a path inside the container; make sure it exists on this machine"),
        );
    }
    service.environment = environment(node.get("environment")).map_err(|m| err(node, m))?;
    if let Some(files) = node.get("env_file") {
        service.env_file =
            env_file(files, &what, path, paths, report).map_err(|m| err(files, m))?;
    }
    if let Some(user) = node.get("user").and_then(Value::scalar) {
        match user.split_once(':') {
            Some((u, g)) if u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok() => {
                service.user = Some(user.to_owned())
            }
            Some((u, g)) => {
                service.user = Some(u.to_owned());
                service.group = Some(g.to_owned());
            }
            None => service.user = Some(user.to_owned()),
        }
    }
    if let Some(restart) = node.get("restart").and_then(Value::scalar) {
        service.restart = Some(
            restart_policy(restart, &what, Loc::new(path, line_of("restart")), report)
                .map_err(|m| err(node, m))?,
        );
    }
    if let Some(signal) = node.get("stop_signal").and_then(Value::scalar) {
        service.stop_signal = Some(
            convert::signal_name(signal)
                .ok_or_else(|| err(node, format!("stop_signal `{signal}` is not a signal")))?,
        );
    }
    if let Some(grace) = node.get("stop_grace_period").and_then(Value::scalar) {
        let ms = convert::go_duration_ms(grace).ok_or_else(|| {
            err(
                node,
                format!("stop_grace_period `{grace}` is not a duration"),
            )
        })?;
        service.stop_grace_period = Some(convert::duration_ms(ms));
    }
    if let Some(check) = node.get("healthcheck") {
        service.healthcheck = healthcheck(check, &what, path, report).map_err(|m| err(check, m))?;
    }
    if let Some(ulimits) = node.get("ulimits") {
        for entry in ulimits.entries() {
            if entry.key == "nofile" {
                let soft = entry
                    .value
                    .scalar()
                    .or(entry.value.get("soft").and_then(Value::scalar));
                let soft = soft.and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
                    err(
                        &entry.value,
                        "ulimits.nofile is a number or {soft, hard}".into(),
                    )
                })?;
                limits.max_fds = Some(soft);
                if entry.value.get("hard").is_some() {
                    report.note(
                        Some(Loc::new(path, entry.line)),
                        format!("{what} ulimits.nofile: Kepler sets one limit as both soft and hard; the soft one ({soft}) was kept"),
                    );
                }
            } else {
                report.drop_key(
                    Loc::new(path, entry.line),
                    format!("{what} ulimits.{}", entry.key),
                    "Kepler sets only the open-file limit (limits.max_fds) and CPU time (limits.cpu_time) per process",
                );
            }
        }
    }
    service.limits = (!limits.is_empty()).then_some(limits);
    for (key, hook) in [("post_start", "post_start"), ("pre_stop", "pre_stop")] {
        if let Some(hooks) = node.get(key) {
            let first = hooks.items().first().and_then(|h| h.get("command"));
            let Some(command) = first else { continue };
            let run = match command.scalar() {
                Some(line) => line.to_owned(),
                None => shlex::try_join(command.items().iter().filter_map(Value::scalar))
                    .map_err(|e| err(command, e.to_string()))?,
            };
            service.hooks.insert(hook.into(), Hook { run });
            if hooks.items().len() > 1 || hooks.items()[0].entries().len() > 1 {
                report.drop_key(
                    Loc::new(path, line_of(key)),
                    format!("{what} {key}"),
                    "only the first hook's command was kept; Kepler hooks run one command with the service's user and environment",
                );
            }
        }
    }
    for dep in dependencies(node, &what, path, report).map_err(|m| err(node, m))? {
        draft.deps.push(dep);
    }
    let replicas = replicas(node, &what, path, report).map_err(|m| err(node, m))?;
    draft.service = Some(service);
    draft.replicas = replicas;
    check_keys(
        node,
        path,
        &what,
        SERVICE_MAPPED,
        SERVICE_LEFT_OUT,
        Format::Compose,
        report,
    );
    Ok(draft)
}
