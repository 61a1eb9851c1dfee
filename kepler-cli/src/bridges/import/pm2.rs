//! pm2 ecosystem files: JSON, or a `.js`/`.config.js` file whose export is
//! a plain object literal (`module.exports = { apps: [...] }`). The literal
//! is read as JSON5 and never run; anything computed (variables, `require`,
//! function calls) is refused with a message saying how to convert it.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::convert::{self, Paths};
use super::model::{Restart, RestartDetails, Service};
use super::replicas::{replica_number_from, with_replica_vars};
use super::tree::{self, Value};
use super::{check_keys, read_text, Draft, Format, Loc, Reading, Report};

const APP_MAPPED: &[&str] = &[
    "name",
    "script",
    "args",
    "interpreter",
    "interpreter_args",
    "node_args",
    "cwd",
    "env",
    "instances",
    "exec_mode",
    "autorestart",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "watch",
    "kill_timeout",
    "user",
    "uid",
    "gid",
    "increment_var",
    "instance_var",
];

const LOGS: &str = "Kepler stores output in its state directory; read it with `kepler logs`";
const APP_LEFT_OUT: &[(&str, &str)] = &[
    ("min_uptime", "Kepler has no minimum uptime; every exit counts toward max_attempts"),
    ("max_memory_restart", "Kepler does not restart on memory use (limits.memory caps address space, which would break Node)"),
    ("cron_restart", "Kepler has no scheduled restarts; use a cron job running `kepler restart`"),
    ("ignore_watch", "Kepler's watch has no ignore patterns (it skips .git and its state directory)"),
    ("watch_delay", "Kepler debounces file changes by 100 ms"),
    ("listen_timeout", "Kepler has no listen timeout; a health check tells readiness"),
    ("wait_ready", "Kepler has no ready message; a health check tells readiness"),
    ("shutdown_with_message", "Kepler stops services with a signal"),
    ("out_file", LOGS),
    ("error_file", LOGS),
    ("log_file", LOGS),
    ("log_date_format", "every line Kepler stores has a timestamp (`kepler logs --timestamps`)"),
    ("merge_logs", LOGS),
    ("combine_logs", LOGS),
    ("log_type", LOGS),
    ("time", "every line Kepler stores has a timestamp (`kepler logs --timestamps`)"),
    ("disable_logs", "set `logs: {store: false}` by hand to keep nothing"),
    ("pid_file", "Kepler keeps process state in its state directory"),
    ("source_map_support", "a Node option Kepler does not know about"),
    ("vizion", "Kepler does not track versions"),
    ("post_update", "Kepler does not update code"),
    ("force", "Kepler never starts a service twice"),
    ("namespace", "Kepler has no namespaces; one config is one stack"),
    ("treekill", "Kepler always signals the whole process group"),
    ("automation", "a pm2.io setting"),
    ("pmx", "a pm2.io setting"),
];

pub fn read(path: &Path, paths: &Paths, report: &mut Report) -> Result<Reading> {
    let text = read_text(path)?;
    let is_js = path
        .extension()
        .is_some_and(|e| e == "js" || e == "cjs" || e == "mjs");
    let literal = if is_js {
        exported_literal(path, &text)?
    } else {
        text.as_str()
    };
    let root = tree::parse_json5(&text, literal).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let apps = match (&root.kind, root.get("apps")) {
        (tree::Kind::Seq(_), _) => &root,
        (_, Some(apps)) => apps,
        _ => bail!(
            "{}: no `apps` list found; is it a {} ecosystem file?",
            path.display(),
            Format::Pm2
        ),
    };
    if root.is_map() {
        check_keys(
            &root,
            path,
            "top-level",
            &["apps"],
            &[("deploy", "Kepler does not deploy code")],
            Format::Pm2,
            report,
        );
    }
    report.note(
        None,
        "pm2 stops an app with SIGINT and kills it 1.6 s later (kill_timeout); the services keep that behaviour (stop_signal SIGINT)",
    );
    let mut drafts = Vec::new();
    for (index, app) in apps.items().iter().enumerate() {
        drafts.push(app_draft(app, index, path, paths, report)?);
    }
    Ok(Reading {
        drafts,
        inherits_environment: true,
    })
}

/// The object literal of `module.exports = { ... };`, after comments and
/// `'use strict'`. Anything else is refused, since the file is never run.
fn exported_literal<'t>(path: &Path, text: &'t str) -> Result<&'t str> {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else if let Some(after) = ["'use strict'", "\"use strict\""]
            .iter()
            .find_map(|s| rest.strip_prefix(s))
        {
            rest = after.trim_start().strip_prefix(';').unwrap_or(after);
        } else {
            break;
        }
    }
    let line = 1 + text[..text.len() - rest.len()].matches('\n').count();
    let refuse = |found: &str| {
        anyhow!(
            "{}:{line}: pm2 ecosystem files are read as data and never run, so the file must be `module.exports = {{ ... }}` \
             with a plain object literal; found {found}. Convert it to JSON with \
             `node -e 'console.log(JSON.stringify(require(\"./{}\"), null, 2))' > ecosystem.json` and import that",
            path.display(),
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        )
    };
    let Some(after) = rest.strip_prefix("module.exports") else {
        let first: String = rest.lines().next().unwrap_or("").chars().take(40).collect();
        return Err(refuse(&format!("`{first}`")));
    };
    let after = after.trim_start();
    let Some(literal) = after.strip_prefix('=') else {
        return Err(refuse("`module.exports` without `=`"));
    };
    let literal = literal.trim();
    let literal = literal.strip_suffix(';').unwrap_or(literal).trim_end();
    if !literal.starts_with('{') || !literal.ends_with('}') {
        return Err(refuse(
            "an export that is not a single `{ ... }` object literal",
        ));
    }
    // Code inside the literal fails JSON5 parsing; say why, not just where.
    if let Err(e) = json5::from_str::<serde::de::IgnoredAny>(literal) {
        let at = e.position().map_or(line, |p| line + p.line);
        return Err(anyhow!(
            "{}:{at}: the exported object is not a plain literal ({e}); values must be strings, numbers, booleans, \
             lists and objects, not variables, `require`, `process.env` or function calls. Convert it to JSON with \
             `node -e 'console.log(JSON.stringify(require(\"./{}\"), null, 2))' > ecosystem.json` and import that",
            path.display(),
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
    }
    Ok(literal)
}

fn app_draft(
    app: &Value,
    index: usize,
    path: &Path,
    paths: &Paths,
    report: &mut Report,
) -> Result<Draft> {
    let at = Loc::new(path, app.line);
    let err = |value: &Value, message: String| {
        anyhow!(
            "{}:{}: apps[{index}]: {message}",
            path.display(),
            value.line
        )
    };
    let text = |key: &str| app.get(key).and_then(Value::scalar);
    let Some(script) = text("script") else {
        let mut draft = Draft::new(text("name").unwrap_or("app"), format!("apps[{index}]"), at);
        draft.skipped = Some("it has no `script`".into());
        return Ok(draft);
    };
    let name = text("name").map(str::to_owned).unwrap_or_else(|| {
        Path::new(script)
            .file_stem()
            .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned())
    });
    let what = format!("app `{name}`");
    let mut draft = Draft::new(&name, what.clone(), at.clone());
    let mut service = Service {
        command: command(app, script, &what, path, report).map_err(|m| err(app, m))?,
        ..Service::default()
    };
    match text("cwd") {
        Some(cwd) => service.working_dir = Some(convert::literal(&paths.rebase(cwd))),
        None if paths.source_dir != paths.output_dir => {
            // pm2 runs apps without `cwd` in the ecosystem file's directory.
            service.working_dir = Some(paths.source_dir.display().to_string());
        }
        None => {}
    }
    if let Some(env) = app.get("env") {
        for entry in env.entries() {
            let value = entry.value.scalar().unwrap_or("");
            service
                .environment
                .push(format!("{}={}", entry.key, convert::literal(value)));
        }
    }
    for entry in app.entries().iter().filter(|e| e.key.starts_with("env_")) {
        report.drop_key(
            Loc::new(path, entry.line),
            format!("{what} {}", entry.key),
            format!("pm2 uses it with `--env {}`; Kepler has one environment per service, so copy the values you want into `environment`", &entry.key[4..]),
        );
    }
    if let Some(user) = text("user").or(text("uid")) {
        service.user = Some(convert::literal(user));
    }
    if let Some(group) = text("gid") {
        service.group = Some(convert::literal(group));
    }
    service.restart = Some(restart(app, &what, path, report).map_err(|m| err(app, m))?);
    service.stop_signal = Some("SIGINT".into());
    let kill_ms = match text("kill_timeout") {
        Some(ms) => ms
            .parse::<u64>()
            .map_err(|_| err(app, format!("kill_timeout `{ms}` is not milliseconds")))?,
        None => 1600,
    };
    service.stop_grace_period = Some(convert::duration_ms(kill_ms));
    if text("exec_mode").is_some_and(|m| m.contains("cluster")) {
        let line = app
            .entries()
            .iter()
            .find(|e| e.key == "exec_mode")
            .map_or(app.line, |e| e.line);
        report.drop_key(
            Loc::new(path, line),
            format!("{what} exec_mode cluster"),
            "cluster mode shares one port between instances through Node's cluster module; Kepler runs independent processes, so give each its own port",
        );
    }
    let count = instances(app, &what, path, report).map_err(|m| err(app, m))?;
    if count > 1 {
        // pm2 numbers instances from 0 in NODE_APP_INSTANCE (or
        // `instance_var`), and adds that number to `increment_var`'s value.
        let instance_var = text("instance_var").unwrap_or("NODE_APP_INSTANCE");
        let mut vars = vec![(instance_var.to_owned(), replica_number_from(0))];
        if let Some(var) = text("increment_var") {
            let prefix = format!("{var}=");
            let base = service
                .environment
                .iter()
                .find_map(|e| e.strip_prefix(&prefix))
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(base) = base {
                service.environment.retain(|e| !e.starts_with(&prefix));
                vars.push((var.to_owned(), replica_number_from(base)));
            }
        }
        service.command = with_replica_vars(std::mem::take(&mut service.command), &vars);
    }
    draft.service = Some(service);
    draft.replicas = count;
    // `env_*` keys were reported above with their environment's name.
    let mut mapped = APP_MAPPED.to_vec();
    mapped.extend(
        app.entries()
            .iter()
            .filter(|e| e.key.starts_with("env_"))
            .map(|e| e.key.as_str()),
    );
    check_keys(app, path, &what, &mapped, APP_LEFT_OUT, Format::Pm2, report);
    Ok(draft)
}

/// argv from `script`, `args` and the interpreter pm2 would pick.
fn command(
    app: &Value,
    script: &str,
    what: &str,
    path: &Path,
    report: &mut Report,
) -> Result<Vec<String>, String> {
    let args = match app.get("args") {
        None => Vec::new(),
        Some(value) => match (&value.kind, value.scalar()) {
            (_, Some(line)) => {
                shlex::split(line).ok_or_else(|| format!("args `{line}` has an unclosed quote"))?
            }
            (tree::Kind::Seq(items), None) => items
                .iter()
                .map(|i| {
                    i.scalar()
                        .map(str::to_owned)
                        .ok_or("args must be a string or a list of strings".to_owned())
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("args must be a string or a list of strings".into()),
        },
    };
    let interpreter_args: Vec<String> = app
        .get("interpreter_args")
        .or(app.get("node_args"))
        .map(|v| match v.scalar() {
            Some(line) => shlex::split(line).unwrap_or_default(),
            None => v
                .items()
                .iter()
                .filter_map(|i| i.scalar().map(str::to_owned))
                .collect(),
        })
        .unwrap_or_default();
    let extension = Path::new(script)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let interpreter = match app.get("interpreter").and_then(Value::scalar) {
        Some("none") => None,
        Some(interpreter) => Some(interpreter.to_owned()),
        None => match extension.as_deref() {
            Some("js" | "mjs" | "cjs") => Some("node".to_owned()),
            Some("ts") => Some("ts-node".to_owned()),
            Some("py") => {
                report.note(
                    Some(Loc::new(path, app.line)),
                    format!("{what}: pm2 runs .py scripts with `python`; the service uses python3, which Debian and most distributions have"),
                );
                Some("python3".to_owned())
            }
            Some("sh") => Some("bash".to_owned()),
            Some("rb") => Some("ruby".to_owned()),
            Some("php") => Some("php".to_owned()),
            Some("pl") => Some("perl".to_owned()),
            Some("coffee") => Some("coffee".to_owned()),
            _ => None,
        },
    };
    let mut argv = Vec::new();
    if let Some(interpreter) = interpreter {
        argv.push(interpreter);
        argv.extend(interpreter_args);
    } else if !interpreter_args.is_empty() {
        return Err("interpreter_args needs an interpreter".into());
    }
    argv.push(script.to_owned());
    argv.extend(args);
    Ok(argv)
}

fn restart(app: &Value, what: &str, path: &Path, report: &mut Report) -> Result<Restart, String> {
    let text = |key: &str| app.get(key).and_then(Value::scalar);
    let autorestart = match text("autorestart") {
        Some(value) => {
            convert::boolean(value).ok_or(format!("autorestart `{value}` is not true or false"))?
        }
        None => true,
    };
    let mut details = RestartDetails {
        policy: if autorestart {
            Restart::ALWAYS
        } else {
            Restart::NO
        },
        ..RestartDetails::default()
    };
    if let Some(watch) = app.get("watch") {
        let patterns: Vec<String> = match watch.scalar() {
            Some(flag) => match convert::boolean(flag) {
                Some(true) => vec!["**/*".into()],
                Some(false) => Vec::new(),
                None => vec![flag.to_owned(), format!("{flag}/**")],
            },
            None => watch
                .items()
                .iter()
                .filter_map(Value::scalar)
                .flat_map(|p| [p.to_owned(), format!("{}/**", p.trim_end_matches('/'))])
                .collect(),
        };
        if !patterns.is_empty() && !autorestart {
            details.policy = Restart::ON_FAILURE;
            report.note(
                Some(Loc::new(path, watch.line)),
                format!("{what}: autorestart is false but watch is on; Kepler restarts on file changes only with a restart policy, so it is on-failure"),
            );
        }
        details.watch = patterns;
    }
    if details.policy != Restart::NO {
        if let Some(max) = text("max_restarts") {
            details.max_attempts = Some(
                max.parse()
                    .map_err(|_| format!("max_restarts `{max}` is not a whole number"))?,
            );
        }
        if let Some(ms) = text("restart_delay") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("restart_delay `{ms}` is not milliseconds"))?;
            if ms > 0 {
                // pm2 waits the same delay before every restart.
                details.delay = Some(convert::duration_ms(ms));
                details.max_delay = Some(convert::duration_ms(ms));
            }
        } else if let Some(ms) = text("exp_backoff_restart_delay") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("exp_backoff_restart_delay `{ms}` is not milliseconds"))?;
            // pm2 doubles it up to 15 s, as Kepler's backoff does.
            details.delay = Some(convert::duration_ms(ms.min(15_000)));
            details.max_delay = Some("15s".into());
        }
    }
    Ok(Restart::from_details(details))
}

/// `instances`: a number, or `max`/0/-1 for the machine's CPUs.
fn instances(app: &Value, what: &str, path: &Path, report: &mut Report) -> Result<u32, String> {
    let Some(value) = app.get("instances") else {
        return Ok(1);
    };
    let text = value
        .scalar()
        .ok_or("instances must be a number or \"max\"")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
    let count = match text {
        "max" | "0" => cpus,
        other => {
            let n: i64 = other
                .parse()
                .map_err(|_| format!("instances `{other}` is not a number or \"max\""))?;
            if n < 0 {
                (cpus + n).max(1)
            } else {
                n
            }
        }
    };
    if matches!(text, "max" | "0") || text.starts_with('-') {
        report.note(
            Some(Loc::new(path, value.line)),
            format!("{what} instances `{text}` depends on the CPU count; this machine has {cpus}, so it has replicas: {count}"),
        );
    }
    Ok(u32::try_from(count.max(1)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_object_literal_export_is_found() {
        let text = "// ecosystem\n'use strict';\nmodule.exports = {\n  apps: [{ name: 'a', script: 'a.js' }],\n};\n";
        let literal = exported_literal(Path::new("ecosystem.config.js"), text).unwrap();
        assert!(literal.starts_with('{') && literal.ends_with('}'));
    }

    #[test]
    fn code_is_refused_with_a_way_out() {
        let computed = "const port = 3000;\nmodule.exports = { apps: [] };\n";
        let err = exported_literal(Path::new("e.config.js"), computed)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e.config.js:1")
                && err.contains("never run")
                && err.contains("JSON.stringify"),
            "{err}"
        );
        let env = "module.exports = {\n  apps: [{ name: 'a', script: process.env.APP }],\n};\n";
        let err = exported_literal(Path::new("e.config.js"), env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e.config.js:2") && err.contains("not a plain literal"),
            "{err}"
        );
    }
}
