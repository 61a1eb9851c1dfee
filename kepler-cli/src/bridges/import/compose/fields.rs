//! Reading the Compose keys that carry over: commands, environment, env
//! files, restart policies, health checks, dependencies and replicas.

use std::path::Path;

use super::super::convert::{self, Paths};
use super::super::model::{Edge, Healthcheck, Restart, RestartDetails};
use super::super::tree::{self, Value};
use super::super::{check_keys, Format, Loc, PendingEdge, Report};
use super::{CONTAINER, NETWORK};

/// A string is split like Compose splits it (shell words, no shell); a list
/// is taken as is.
pub fn words(value: &Value) -> Result<Vec<String>, String> {
    match value.scalar() {
        Some(line) => shlex::split(line).ok_or_else(|| format!("`{line}` has an unclosed quote")),
        None => value
            .items()
            .iter()
            .map(|w| {
                w.scalar()
                    .map(str::to_owned)
                    .ok_or_else(|| "expected a string or a list of strings".to_owned())
            })
            .collect(),
    }
}

/// Compose substitutes `${VAR}` in commands when it reads the file; Kepler
/// passes words as written, so such a command runs through `sh -c` to
/// expand them at run time. `$$` is Compose's literal `$`.
pub fn runtime_argv(words: Vec<String>) -> Vec<String> {
    if !words.iter().any(|w| w.contains('$')) {
        return words;
    }
    let quoted: Vec<String> = words
        .iter()
        .map(|word| {
            let mut out = String::from("\"");
            for c in word.replace("$$", "\u{1}").chars() {
                match c {
                    '"' | '\\' | '`' => {
                        out.push('\\');
                        out.push(c);
                    }
                    '\u{1}' => out.push_str("\\$"),
                    _ => out.push(c),
                }
            }
            out.push('"');
            out
        })
        .collect();
    vec![
        "sh".into(),
        "-c".into(),
        format!("exec {}", quoted.join(" ")),
    ]
}

pub fn environment(node: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    match &node.kind {
        tree::Kind::Seq(items) => {
            for item in items {
                let entry = item.scalar().ok_or("environment entries are KEY=value")?;
                match entry.split_once('=') {
                    Some(_) => out.push(entry.to_owned()),
                    // `KEY` alone passes the variable from the caller's shell.
                    None => out.push(format!("{entry}=${{{entry}}}")),
                }
            }
        }
        tree::Kind::Map(entries) => {
            for entry in entries {
                match entry.value.scalar() {
                    Some(value) => out.push(format!("{}={value}", entry.key)),
                    None => out.push(format!("{0}=${{{0}}}", entry.key)),
                }
            }
        }
        _ => return Err("environment is a list of KEY=value or a mapping".into()),
    }
    Ok(out)
}

pub fn env_file(
    node: &Value,
    what: &str,
    path: &Path,
    paths: &Paths,
    report: &mut Report,
) -> Result<Option<String>, String> {
    let mut files: Vec<(String, bool, usize)> = Vec::new();
    let mut push = |item: &Value| -> Result<(), String> {
        if let Some(file) = item.scalar() {
            files.push((file.to_owned(), true, item.line));
        } else {
            let file = item
                .get("path")
                .and_then(Value::scalar)
                .ok_or("env_file entries are paths or {path, required}")?;
            let required = item
                .get("required")
                .and_then(Value::scalar)
                .and_then(convert::boolean)
                .unwrap_or(true);
            files.push((file.to_owned(), required, item.line));
        }
        Ok(())
    };
    match &node.kind {
        tree::Kind::Seq(items) => items.iter().try_for_each(&mut push)?,
        _ => push(node)?,
    }
    let mut kept = None;
    for (file, required, line) in files {
        let exists = paths.source_dir.join(&file).is_file();
        if !required && !exists {
            report.note(
                Some(Loc::new(path, line)),
                format!("{what} env_file `{file}` is optional and missing, so it was left out"),
            );
            continue;
        }
        if kept.is_none() {
            kept = Some(paths.rebase(&file));
        } else {
            report.drop_key(
                Loc::new(path, line),
                format!("{what} env_file `{file}`"),
                "a Kepler service reads one env_file; merge the files or move these values into `environment`",
            );
        }
    }
    Ok(kept)
}

pub fn restart_policy(
    text: &str,
    what: &str,
    at: Loc,
    report: &mut Report,
) -> Result<Restart, String> {
    let (policy, attempts) = text
        .split_once(':')
        .map_or((text, None), |(p, n)| (p, Some(n)));
    let policy = match policy {
        "no" => Restart::NO,
        "always" => Restart::ALWAYS,
        "on-failure" => Restart::ON_FAILURE,
        "unless-stopped" => {
            report.note(
                Some(at),
                format!("{what} restart unless-stopped became always: a service stopped with `kepler stop` stays stopped either way"),
            );
            Restart::ALWAYS
        }
        other => {
            return Err(format!(
                "restart `{other}` is not no, always, on-failure or unless-stopped"
            ))
        }
    };
    let max_attempts = attempts
        .map(|n| {
            n.parse::<u32>()
                .map_err(|_| format!("restart `{text}`: `{n}` is not a number of attempts"))
        })
        .transpose()?;
    Ok(Restart::from_details(RestartDetails {
        policy,
        max_attempts,
        ..RestartDetails::default()
    }))
}

pub fn healthcheck(
    node: &Value,
    what: &str,
    path: &Path,
    report: &mut Report,
) -> Result<Option<Healthcheck>, String> {
    if node
        .get("disable")
        .and_then(Value::scalar)
        .and_then(convert::boolean)
        == Some(true)
    {
        return Ok(None);
    }
    let Some(test) = node.get("test") else {
        return Err("a healthcheck needs `test`".into());
    };
    let test = match test.scalar() {
        Some(line) => vec!["CMD-SHELL".to_owned(), line.to_owned()],
        None => words(test)?,
    };
    if test.first().map(String::as_str) == Some("NONE") {
        return Ok(None);
    }
    let duration = |key: &str| -> Result<Option<String>, String> {
        node.get(key)
            .and_then(Value::scalar)
            .map(|d| {
                convert::go_duration_ms(d)
                    .map(convert::duration_ms)
                    .ok_or(format!("healthcheck {key} `{d}` is not a duration"))
            })
            .transpose()
    };
    let check = Healthcheck {
        test: Some(test),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start_period")?,
        retries: node
            .get("retries")
            .and_then(Value::scalar)
            .map(|r| {
                r.parse()
                    .map_err(|_| format!("healthcheck retries `{r}` is not a whole number"))
            })
            .transpose()?,
        ..Healthcheck::default()
    };
    check_keys(
        node,
        path,
        &format!("{what} healthcheck"),
        &[
            "test",
            "interval",
            "timeout",
            "start_period",
            "retries",
            "disable",
        ],
        &[(
            "start_interval",
            "Kepler checks at `interval` during the start period too",
        )],
        Format::Compose,
        report,
    );
    Ok(Some(check))
}

pub fn dependencies(
    node: &Value,
    what: &str,
    path: &Path,
    report: &mut Report,
) -> Result<Vec<PendingEdge>, String> {
    let Some(deps) = node.get("depends_on") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    match &deps.kind {
        tree::Kind::Seq(items) => {
            for item in items {
                let target = item
                    .scalar()
                    .ok_or("depends_on entries are service names")?;
                out.push(PendingEdge {
                    target: target.to_owned(),
                    edge: Edge::on(Edge::STARTED),
                    at: Loc::new(path, item.line),
                });
            }
        }
        tree::Kind::Map(entries) => {
            for entry in entries {
                let condition = entry
                    .value
                    .get("condition")
                    .and_then(Value::scalar)
                    .unwrap_or("service_started");
                let condition = match condition {
                    "service_started" => Edge::STARTED,
                    "service_healthy" => Edge::HEALTHY,
                    "service_completed_successfully" => Edge::COMPLETED,
                    other => {
                        return Err(format!(
                            "depends_on.{}: `{other}` is not a Compose condition",
                            entry.key
                        ))
                    }
                };
                let restart = entry
                    .value
                    .get("restart")
                    .and_then(Value::scalar)
                    .and_then(convert::boolean);
                if let Some(required) = entry.value.entries().iter().find(|e| e.key == "required") {
                    if required.value.scalar().and_then(convert::boolean) == Some(false) {
                        report.drop_key(
                            Loc::new(path, required.line),
                            format!("{what} depends_on.{} required", entry.key),
                            "a Kepler dependency is always required",
                        );
                    }
                }
                out.push(PendingEdge {
                    target: entry.key.clone(),
                    edge: Edge {
                        restart: restart.filter(|r| *r),
                        ..Edge::on(condition)
                    },
                    at: Loc::new(path, entry.line),
                });
            }
        }
        _ => return Err("depends_on is a list or a mapping of service names".into()),
    }
    Ok(out)
}

/// `deploy.replicas` or the older `scale`; the rest of `deploy` is Swarm's.
pub fn replicas(node: &Value, what: &str, path: &Path, report: &mut Report) -> Result<u32, String> {
    let mut count = None;
    if let Some(scale) = node.get("scale").and_then(Value::scalar) {
        count = Some(
            scale
                .parse::<u32>()
                .map_err(|_| format!("scale `{scale}` is not a whole number"))?,
        );
    }
    if let Some(deploy) = node.get("deploy") {
        if let Some(replicas) = deploy.get("replicas").and_then(Value::scalar) {
            count = Some(
                replicas
                    .parse::<u32>()
                    .map_err(|_| format!("deploy.replicas `{replicas}` is not a whole number"))?,
            );
        }
        check_keys(
            deploy,
            path,
            &format!("{what} deploy"),
            &["replicas", "resources"],
            &[
                ("restart_policy", "use the service's `restart`"),
                ("placement", "Kepler runs everything on this machine"),
                ("update_config", "Kepler has no rolling updates"),
                ("rollback_config", "Kepler has no rolling updates"),
                ("mode", "Kepler runs everything on this machine"),
                ("labels", CONTAINER),
                ("endpoint_mode", NETWORK),
            ],
            Format::Compose,
            report,
        );
    }
    Ok(count.unwrap_or(1))
}
