//! Procfile (foreman, honcho): `name: command` lines. Each becomes a service
//! running `sh -c command`, as those tools run them; a `.env` beside the
//! Procfile becomes every service's `env_file`.

use std::path::Path;

use anyhow::Result;

use super::convert::Paths;
use super::model::Service;
use super::{read_text, sibling, Draft, Format, Loc, Reading, Report};

/// foreman and honcho give process type N (from 0) the port 5000 + 100 N.
const BASE_PORT: u32 = 5000;

pub fn read(path: &Path, paths: &Paths, report: &mut Report) -> Result<Reading> {
    let text = read_text(path)?;
    let env_path = sibling(path, ".env");
    let env_text = std::fs::read_to_string(&env_path).ok();
    let env_sets_port = env_text.as_deref().is_some_and(|env| {
        env.lines().any(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            line.starts_with("PORT=")
        })
    });
    if env_text.is_some() {
        report.note(
            None,
            format!(
                "{} becomes `env_file` of every service (foreman and honcho load it the same way); \
                 Kepler reads it when the config is baked, so run `kepler recreate` after editing it",
                env_path.display()
            ),
        );
    }
    let mut drafts = Vec::new();
    let mut index = 0u32;
    for (number, line) in text.lines().enumerate() {
        let at = Loc::new(path, number + 1);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, command)) = parse_line(trimmed) else {
            report.drop_key(
                at,
                format!("line `{trimmed}`"),
                "not a `name: command` entry (names are letters, digits, `_` and `-`)",
            );
            continue;
        };
        let mut service = Service {
            command: vec!["sh".into(), "-c".into(), command.to_owned()],
            env_file: env_text.is_some().then(|| paths.beside_source(".env")),
            ..Service::default()
        };
        if command.contains("$PORT") || command.contains("${PORT}") {
            let port = BASE_PORT + 100 * index;
            if env_sets_port {
                report.note(
                    Some(at.clone()),
                    format!("{name} uses $PORT; foreman would set it to {port}, but .env sets PORT, which Kepler uses for every service"),
                );
            } else {
                service.environment.push(format!("PORT={port}"));
                report.note(
                    Some(at.clone()),
                    format!("{name} uses $PORT, which foreman and honcho set to {port} for it; Kepler sets no port, so PORT={port} is written into its environment"),
                );
            }
        }
        let mut draft = Draft::new(name, format!("process `{name}`"), at);
        draft.service = Some(service);
        drafts.push(draft);
        index += 1;
    }
    if drafts.is_empty() {
        anyhow::bail!(
            "{}: no `name: command` lines found; is it a {}?",
            path.display(),
            Format::Procfile
        );
    }
    Ok(Reading {
        drafts,
        inherits_environment: true,
    })
}

/// `web: bundle exec puma` -> ("web", "bundle exec puma").
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let (name, command) = line.split_once(':')?;
    let name = name.trim();
    let command = command.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (valid && !command.is_empty()).then_some((name, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_colon() {
        assert_eq!(
            parse_line("web: bin/web --bind 0.0.0.0:$PORT"),
            Some(("web", "bin/web --bind 0.0.0.0:$PORT"))
        );
        assert_eq!(parse_line("not a process"), None);
        assert_eq!(parse_line("bad name: x"), None);
        assert_eq!(parse_line("empty:"), None);
    }
}
