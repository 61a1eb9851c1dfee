//! supervisord.conf: each `[program:x]` becomes a service (with `replicas:`
//! for `numprocs`); `[group:x]` and the daemon's own sections are
//! reported; `[include]` files are read in place.

mod expand;
mod ini;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::convert::{self, Paths};
use super::model::{LogStore, Logs, Restart, RestartDetails, Service};
use super::replicas::replica_number_from;
use super::{Draft, Format, Reading, Report};
use expand::{expand, EnvStyle, MARKER, PROCESS_NUM};
use ini::{Key, Section};

/// Program keys left out, and why.
const LEFT_OUT: &[(&str, &str)] = &[
    (
        "startsecs",
        "Kepler counts a service as started once it is spawned; there is no minimum run time",
    ),
    ("umask", "Kepler does not set a umask per service"),
    ("serverurl", "there is no supervisorctl server to point at"),
    (
        "redirect_stderr",
        "Kepler stores stdout and stderr apart; `kepler logs` shows them merged in time order",
    ),
    (
        "stdout_logfile_backups",
        "Kepler keeps one log file per stream, trimmed at `logs.max_size`",
    ),
    (
        "stderr_logfile_backups",
        "Kepler keeps one log file per stream, trimmed at `logs.max_size`",
    ),
    (
        "stdout_capture_maxbytes",
        "there is no capture mode in Kepler",
    ),
    (
        "stderr_capture_maxbytes",
        "there is no capture mode in Kepler",
    ),
    ("stdout_events_enabled", "Kepler has no event listeners"),
    ("stderr_events_enabled", "Kepler has no event listeners"),
    (
        "stdout_syslog",
        "Kepler keeps logs in its state directory, not in syslog",
    ),
    (
        "stderr_syslog",
        "Kepler keeps logs in its state directory, not in syslog",
    ),
];

const MAPPED: &[&str] = &[
    "command",
    "directory",
    "user",
    "environment",
    "autostart",
    "autorestart",
    "startretries",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "numprocs",
    "numprocs_start",
    "priority",
    "process_name",
    "stdout_logfile",
    "stderr_logfile",
    "stdout_logfile_maxbytes",
    "stderr_logfile_maxbytes",
];

pub fn read(path: &Path, paths: &Paths, report: &mut Report) -> Result<Reading> {
    let sections = ini::read_with_includes(path)?;
    let global_env: Vec<Key> = sections
        .iter()
        .filter(|s| s.name == "supervisord")
        .filter_map(|s| s.get("environment").cloned())
        .collect();
    let mut drafts = Vec::new();
    for section in &sections {
        let (kind, name) = section
            .name
            .split_once(':')
            .map_or((section.name.as_str(), ""), |(k, n)| (k, n.trim()));
        match kind {
            "program" => drafts.push(program(section, name, &global_env, paths, report)?),
            "group" => group(section, name, report),
            "include" => {}
            "eventlistener" | "fcgi-program" => {
                let mut draft = Draft::new(name, format!("[{}]", section.name), section.at.clone());
                draft.skipped = Some(if kind == "eventlistener" {
                    "event listeners speak supervisord's event protocol, which Kepler does not have"
                        .into()
                } else {
                    "FastCGI programs share a socket opened by supervisord, which Kepler does not do".into()
                });
                drafts.push(draft);
            }
            "supervisord" => {
                for key in &section.keys {
                    if key.name == "environment" {
                        continue;
                    }
                    report.drop_key(
                        key.at.clone(),
                        format!("[supervisord] {}", key.name),
                        "a setting of the supervisord daemon itself; Kepler's daemon is configured apart from kepler.yaml",
                    );
                }
                if let Some(env) = section.get("environment") {
                    report.note(
                        Some(env.at.clone()),
                        "[supervisord] environment applies to every program, so it is written into each service's environment",
                    );
                }
            }
            _ => {
                for key in &section.keys {
                    report.drop_key(
                        key.at.clone(),
                        format!("[{}] {}", section.name, key.name),
                        "supervisorctl and its servers have no counterpart: the kepler CLI talks to the daemon over its own socket",
                    );
                }
            }
        }
    }
    if drafts.is_empty() {
        anyhow::bail!(
            "{}: no [program:x] section found; is it a supervisord config?",
            path.display()
        );
    }
    Ok(Reading {
        drafts,
        inherits_environment: true,
    })
}

fn group(section: &Section, name: &str, report: &mut Report) {
    let programs = section
        .get("programs")
        .map(|k| k.value.replace(',', " "))
        .unwrap_or_default();
    report.note(
        Some(section.at.clone()),
        format!(
            "[group:{name}] ({}): Kepler has no groups; start them together with `kepler start {}`",
            programs.split_whitespace().collect::<Vec<_>>().join(", "),
            programs.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    );
    for key in &section.keys {
        if key.name != "programs" {
            report.drop_key(
                key.at.clone(),
                format!("[group:{name}] {}", key.name),
                "Kepler has no groups to apply it to",
            );
        }
    }
}

fn program(
    section: &Section,
    name: &str,
    global_env: &[Key],
    paths: &Paths,
    report: &mut Report,
) -> Result<Draft> {
    let what = format!("[program:{name}]");
    let mut draft = Draft::new(name, what.clone(), section.at.clone());
    let key_of = |key: &str| section.get(key);
    let number = |key: &str, default: u32| -> Result<u32> {
        key_of(key).map_or(Ok(default), |k| {
            k.value.parse().map_err(|_| {
                anyhow!(
                    "{}: {what} {key}: `{}` is not a whole number",
                    k.at,
                    k.value
                )
            })
        })
    };
    let Some(command) = key_of("command") else {
        draft.skipped = Some("it has no `command`".into());
        return Ok(draft);
    };
    let numprocs = number("numprocs", 1)?.max(1);
    let numprocs_start = number("numprocs_start", 0)?;
    let here = if paths.source_dir == paths.output_dir {
        ".".to_owned()
    } else {
        paths.source_dir.display().to_string()
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    // Every field but the command is the same for all processes: with
    // %(process_num) it takes the first process's number. In the command,
    // the number comes from KEPLER_REPLICA when the program is replicated.
    let vars: HashMap<&str, String> = HashMap::from([
        ("program_name", name.to_owned()),
        ("group_name", name.to_owned()),
        ("process_num", numprocs_start.to_string()),
        ("numprocs", numprocs.to_string()),
        ("here", here),
        ("host_node_name", host),
    ]);
    let mut command_vars = vars.clone();
    if numprocs > 1 {
        command_vars.insert("process_num", format!("{MARKER}{PROCESS_NUM}"));
    }
    let expand_key = |key: &Key, style: EnvStyle| {
        expand(&key.value, &vars, style).with_context(|| format!("{}: {what} {}", key.at, key.name))
    };
    let command_text = expand(&command.value, &command_vars, EnvStyle::Marker)
        .with_context(|| format!("{}: {what} command", command.at))?;
    let mut service = Service {
        command: command_argv(&command_text, numprocs_start)
            .with_context(|| format!("{}: {what} command", command.at))?,
        ..Service::default()
    };
    if let Some(dir) = key_of("directory") {
        service.working_dir = Some(paths.rebase(&expand_key(dir, EnvStyle::Kepler)?));
    }
    if let Some(user) = key_of("user") {
        service.user = Some(expand_key(user, EnvStyle::Kepler)?);
    }
    for env in global_env.iter().chain(key_of("environment")) {
        let text = expand_key(env, EnvStyle::Kepler)?;
        service.environment.extend(
            environment_pairs(&text).with_context(|| format!("{}: {what} environment", env.at))?,
        );
    }
    service.restart = Some(restart(section, &what, report)?);
    if let Some(signal) = key_of("stopsignal") {
        service.stop_signal = Some(convert::signal_name(&signal.value).ok_or_else(|| {
            anyhow!(
                "{}: {what} stopsignal: `{}` is not a signal",
                signal.at,
                signal.value
            )
        })?);
    }
    if let Some(wait) = key_of("stopwaitsecs") {
        let secs: u64 = wait.value.parse().map_err(|_| {
            anyhow!(
                "{}: {what} stopwaitsecs: `{}` is not a number of seconds",
                wait.at,
                wait.value
            )
        })?;
        service.stop_grace_period = Some(convert::duration_secs(secs));
    }
    service.logs = logs(section, &what, report);
    draft.service = Some(service);
    draft.replicas = numprocs;
    if numprocs > 1 {
        report.note(
            key_of("numprocs").map(|k| k.at.clone()),
            format!("{what} numprocs = {numprocs}: replicas: {numprocs}; %(process_num)d in the command is the instance's KEPLER_REPLICA counted from {numprocs_start}"),
        );
        for key in ["directory", "user", "environment"] {
            if let Some(key) = key_of(key).filter(|k| k.value.contains("%(process_num)")) {
                report.note(
                    Some(key.at.clone()),
                    format!("{what} {}: uses %(process_num), which Kepler cannot vary per instance outside the command; every instance gets the first process's value", key.name),
                );
            }
        }
    }
    notes(section, &what, report);
    for key in &section.keys {
        if !MAPPED.contains(&key.name.as_str()) {
            let why = LEFT_OUT.iter().find(|(k, _)| *k == key.name).map_or_else(
                || {
                    format!(
                        "not a {} program setting that Kepler knows",
                        Format::Supervisord
                    )
                },
                |(_, why)| (*why).to_owned(),
            );
            report.drop_key(key.at.clone(), format!("{what} {}", key.name), why);
        }
    }
    Ok(draft)
}

/// `autorestart`, `startretries` and `exitcodes`.
fn restart(section: &Section, what: &str, report: &mut Report) -> Result<Restart> {
    let mut details = RestartDetails {
        // supervisord's default is `unexpected`.
        policy: Restart::ON_FAILURE,
        ..RestartDetails::default()
    };
    if let Some(key) = section.get("autorestart") {
        details.policy = match key.value.to_ascii_lowercase().as_str() {
            "unexpected" => Restart::ON_FAILURE,
            other => match convert::boolean(other) {
                Some(true) => Restart::ALWAYS,
                Some(false) => Restart::NO,
                None => anyhow::bail!(
                    "{}: {what} autorestart: `{}` is not true, false or unexpected",
                    key.at,
                    key.value
                ),
            },
        };
    }
    if let Some(key) = section.get("startretries") {
        let retries: u32 = key.value.parse().map_err(|_| {
            anyhow!(
                "{}: {what} startretries: `{}` is not a whole number",
                key.at,
                key.value
            )
        })?;
        if details.policy != Restart::NO {
            details.max_attempts = Some(retries);
            report.note(
                Some(key.at.clone()),
                format!("{what} startretries = {retries} became restart.max_attempts; Kepler counts every automatic restart since the last `kepler start`, not only failed starts"),
            );
        }
    }
    if let Some(key) = section.get("exitcodes") {
        let codes: Vec<&str> = key.value.split(',').map(str::trim).collect();
        if codes != ["0"] {
            report.drop_key(
                key.at.clone(),
                format!("{what} exitcodes"),
                format!(
                    "Kepler's on-failure restarts on every exit code but 0; supervisord expected {}",
                    codes.join(", ")
                ),
            );
        }
    }
    Ok(Restart::from_details(details))
}

/// `stdout_logfile = NONE` keeps nothing; a size limit becomes `max_size`.
fn logs(section: &Section, what: &str, report: &mut Report) -> Option<Logs> {
    let mut logs = Logs::default();
    let none = |key: &str| {
        section
            .get(key)
            .is_some_and(|k| k.value.eq_ignore_ascii_case("none"))
    };
    let (no_stdout, no_stderr) = (none("stdout_logfile"), none("stderr_logfile"));
    if no_stdout || no_stderr {
        logs.store = Some(LogStore {
            stdout: !no_stdout,
            stderr: !no_stderr,
        });
    }
    for stream in ["stdout", "stderr"] {
        if let Some(file) = section.get(&format!("{stream}_logfile")) {
            if !file.value.eq_ignore_ascii_case("none") {
                report.drop_key(
                    file.at.clone(),
                    format!("{what} {stream}_logfile"),
                    format!("Kepler stores output in its state directory; read it with `kepler logs {}`", what.trim_start_matches("[program:").trim_end_matches(']')),
                );
            }
        }
        if let Some(max) = section.get(&format!("{stream}_logfile_maxbytes")) {
            match convert::size(&max.value) {
                // 0 is supervisord's "unlimited".
                Some(size) if size == "0" => {}
                Some(size) if logs.max_size.is_none() => logs.max_size = Some(size),
                Some(size) if Some(&size) != logs.max_size.as_ref() => report.drop_key(
                    max.at.clone(),
                    format!("{what} {stream}_logfile_maxbytes"),
                    "Kepler has one `max_size` for both streams; the stdout limit was kept",
                ),
                Some(_) => {}
                None => report.drop_key(
                    max.at.clone(),
                    format!("{what} {stream}_logfile_maxbytes"),
                    format!("`{}` is not a size like 50MB", max.value),
                ),
            }
        }
    }
    (logs.max_size.is_some() || logs.store.is_some()).then_some(logs)
}

/// Keys that carry over as a note, or are dropped only with some values.
fn notes(section: &Section, what: &str, report: &mut Report) {
    if let Some(key) = section.get("priority") {
        report.note(
            Some(key.at.clone()),
            format!("{what} priority = {}: Kepler orders starts by `depends_on`, not by priority; add dependencies where the order matters", key.value),
        );
    }
    if let Some(key) = section.get("autostart") {
        if convert::boolean(&key.value) == Some(false) {
            report.drop_key(
                key.at.clone(),
                format!("{what} autostart"),
                "`kepler start` starts every service; start the others by name (`kepler start web db`)",
            );
        }
    }
    for name in ["stopasgroup", "killasgroup"] {
        if let Some(key) = section.get(name) {
            if convert::boolean(&key.value) == Some(false) {
                report.drop_key(
                    key.at.clone(),
                    format!("{what} {name}"),
                    "Kepler always signals the whole process group of a service",
                );
            }
        }
    }
    if let Some(key) = section.get("process_name") {
        if key.value != "%(program_name)s" && !key.value.contains("%(program_name)s_%(process_num)")
        {
            report.drop_key(
                key.at.clone(),
                format!("{what} process_name"),
                "Kepler names services after the program (its instances are numbered: worker.1, worker.2, ...)",
            );
        }
    }
}

/// The command split like supervisord does (`shlex`); `%(ENV_X)s` that it
/// substituted at its start become shell variables of a `sh -c` line.
fn command_argv(text: &str, process_num_start: u32) -> Result<Vec<String>> {
    let words = shlex::split(text)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| anyhow!("`{text}` is not a command line (unbalanced quotes?)"))?;
    if !words.iter().any(|w| w.contains(MARKER)) {
        return Ok(words);
    }
    let mut definitions: Vec<String> = Vec::new();
    let quoted: Vec<String> = words
        .iter()
        .map(|word| {
            let mut out = String::from("\"");
            let mut inside = false;
            let mut variable = String::new();
            for c in word.chars() {
                if c == MARKER {
                    if inside {
                        if let Some(definition) =
                            process_num_definition(&variable, process_num_start)
                        {
                            if !definitions.contains(&definition) {
                                definitions.push(definition);
                            }
                        }
                        variable.clear();
                    }
                    out.push_str(if inside { "}" } else { "${" });
                    inside = !inside;
                    continue;
                }
                if inside {
                    variable.push(c);
                } else if matches!(c, '"' | '\\' | '`' | '$') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        })
        .collect();
    definitions.push(format!("exec {}", quoted.join(" ")));
    Ok(vec!["sh".into(), "-c".into(), definitions.join("; ")])
}

/// The shell line that sets a `%(process_num)` variable of a replicated
/// program: `PROCESS_NUM` is its number (KEPLER_REPLICA counted from
/// `numprocs_start`), `PROCESS_NUM_02` the same formatted like `%02d`.
fn process_num_definition(variable: &str, start: u32) -> Option<String> {
    let rest = variable.strip_prefix(PROCESS_NUM)?;
    let number = replica_number_from(i64::from(start));
    if rest.is_empty() {
        return Some(format!("{variable}={number}"));
    }
    let flags = rest.strip_prefix('_')?;
    Some(format!("{variable}=$(printf %{flags}d {number})"))
}

/// supervisord's `KEY="value",KEY2=value2` (quotes optional; commas and
/// newlines separate pairs) as `KEY=value` entries.
fn environment_pairs(text: &str) -> Result<Vec<String>> {
    let mut pairs = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut parts = Vec::new();
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',' | '\n') => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quote.is_some() {
        anyhow::bail!("a quote is not closed in `{text}`");
    }
    parts.push(current);
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((key, value)) = part.split_once('=') else {
            anyhow::bail!("`{part}` is not KEY=value");
        };
        pairs.push(format!("{}={value}", key.trim()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_pairs_follow_supervisord_syntax() {
        assert_eq!(
            environment_pairs("A=\"1,2\",B=plain, C='x y'").unwrap(),
            ["A=1,2", "B=plain", "C=x y"]
        );
        assert!(environment_pairs("A=\"open").is_err());
    }

    #[test]
    fn commands_with_environment_expansions_run_through_a_shell() {
        assert_eq!(
            command_argv("/bin/app --port 80 'a b'", 0).unwrap(),
            ["/bin/app", "--port", "80", "a b"]
        );
        assert_eq!(
            command_argv("/bin/app --home=\u{1}HOME\u{1}/x $lit", 0).unwrap(),
            [
                "sh",
                "-c",
                "exec \"/bin/app\" \"--home=${HOME}/x\" \"\\$lit\""
            ]
        );
    }

    #[test]
    fn process_numbers_of_a_replicated_program_come_from_kepler_replica() {
        let vars = HashMap::from([
            ("program_name", "w".to_owned()),
            ("process_num", format!("{MARKER}{PROCESS_NUM}")),
        ]);
        let text = expand(
            "/bin/w --id %(process_num)d --name %(program_name)s_%(process_num)02d",
            &vars,
            EnvStyle::Marker,
        )
        .unwrap();
        assert_eq!(
            command_argv(&text, 0).unwrap(),
            [
                "sh",
                "-c",
                "PROCESS_NUM=$((KEPLER_REPLICA - 1)); \
                 PROCESS_NUM_02=$(printf %02d $((KEPLER_REPLICA - 1))); \
                 exec \"/bin/w\" \"--id\" \"${PROCESS_NUM}\" \"--name\" \"w_${PROCESS_NUM_02}\""
            ]
        );
        // Outside the command the number cannot vary per instance.
        assert!(expand("%(process_num)d", &vars, EnvStyle::Kepler).is_err());
    }
}
