//! `kepler import`: a kepler.yaml from the process files people already
//! have. One module per source format reads its file into [`Draft`]s (one
//! per process, program, app or service); [`assemble`] names them, turns
//! copies into `replicas:` ([`replicas`]) and wires their dependencies, the
//! same way for every format. Everything is recorded in a [`Report`].

mod compose;
mod convert;
pub mod model;
mod pm2;
mod process_compose;
mod procfile;
mod replicas;
pub mod report;
mod supervisord;
mod tree;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indexmap::IndexMap;

pub use convert::{normalize, Paths};
use model::{Edge, Global, KeplerConfig, Service};
pub use report::{Loc, Report};
use tree::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Procfile,
    Supervisord,
    ProcessCompose,
    Pm2,
    Compose,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Procfile => "Procfile",
            Self::Supervisord => "supervisord",
            Self::ProcessCompose => "process-compose",
            Self::Pm2 => "pm2",
            Self::Compose => "Docker Compose",
        })
    }
}

/// One source entry on its way to becoming services.
pub struct Draft {
    /// The entry's name in the source.
    pub name: String,
    /// How the report names it: `program:web`, `app api`.
    pub what: String,
    pub at: Loc,
    /// The service every copy runs; `None` when the entry was skipped.
    pub service: Option<Service>,
    /// How many copies the source runs; see [`replicas`].
    pub replicas: u32,
    /// Why the entry was not imported; then `service` is `None`.
    pub skipped: Option<String>,
    pub deps: Vec<PendingEdge>,
}

impl Draft {
    pub fn new(name: &str, what: String, at: Loc) -> Self {
        Self {
            name: name.to_owned(),
            what,
            at,
            service: None,
            replicas: 1,
            skipped: None,
            deps: Vec::new(),
        }
    }
}

/// A dependency named in the source, resolved once every entry is known.
pub struct PendingEdge {
    pub target: String,
    pub edge: Edge,
    pub at: Loc,
}

/// What a format reader produces.
pub struct Reading {
    pub drafts: Vec<Draft>,
    /// Whether processes of this tool start from the caller's environment.
    pub inherits_environment: bool,
}

pub struct Imported {
    pub config: KeplerConfig,
    pub report: Report,
    pub header: Vec<String>,
}

/// Reads `source` (as the user named it) in `format` and builds the config
/// that will be written into `output_dir`.
pub fn import(source: &Path, format: Format, output_dir: &Path) -> Result<Imported> {
    let absolute = std::path::absolute(source)
        .with_context(|| format!("cannot resolve {}", source.display()))?;
    let paths = Paths {
        source_dir: absolute.parent().unwrap_or(Path::new("/")).to_owned(),
        output_dir: std::path::absolute(output_dir).unwrap_or_else(|_| output_dir.to_owned()),
    };
    let mut report = Report::default();
    let reading = match format {
        Format::Procfile => procfile::read(source, &paths, &mut report)?,
        Format::Supervisord => supervisord::read(source, &paths, &mut report)?,
        Format::ProcessCompose => process_compose::read(source, &paths, &mut report)?,
        Format::Pm2 => pm2::read(source, &paths, &mut report)?,
        Format::Compose => compose::read(source, &paths, &mut report)?,
    };
    let services = assemble(reading.drafts, &mut report);
    if services.is_empty() {
        bail!(
            "{}: nothing to import: no entry could become a service{}",
            source.display(),
            if report.entries.is_empty() {
                String::new()
            } else {
                format!(":\n{report}")
            }
        );
    }
    let kepler = reading.inherits_environment.then(|| {
        report.note(
            None,
            format!(
                "{format} starts processes with the caller's environment; Kepler's default is an empty one, \
                 so the config sets `kepler.sys_env: inherit` (the environment of whoever first runs it, \
                 captured once). To pass only what services need, remove it and list variables under \
                 `environment` (e.g. PATH=${{PATH}})"
            ),
        );
        Global {
            sys_env: Some("inherit".into()),
        }
    });
    Ok(Imported {
        config: KeplerConfig { kepler, services },
        report,
        header: vec![
            format!(
                "Imported from {} ({format}) by `kepler import`.",
                source.display()
            ),
            "Check it with `kepler check`; the import report lists what was not carried over."
                .to_owned(),
        ],
    })
}

/// Guesses the format from the file's name, then from its content.
pub fn detect(source: &Path, text: &str) -> Result<Format> {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let by_name = if name == "procfile" || name.starts_with("procfile.") {
        Some(Format::Procfile)
    } else if name.contains("supervisor") {
        Some(Format::Supervisord)
    } else if name.contains("process-compose") {
        Some(Format::ProcessCompose)
    } else if name.contains("ecosystem") || name.ends_with(".js") || name.ends_with(".cjs") {
        Some(Format::Pm2)
    } else if name.contains("compose") && (name.ends_with(".yml") || name.ends_with(".yaml")) {
        Some(Format::Compose)
    } else {
        None
    };
    if let Some(format) = by_name {
        return Ok(format);
    }
    let has_line = |prefix: &str| text.lines().any(|l| l.trim_start().starts_with(prefix));
    if has_line("[program:") || has_line("[supervisord]") {
        return Ok(Format::Supervisord);
    }
    if text.contains("module.exports") || has_line("\"apps\"") || has_line("apps:") {
        return Ok(Format::Pm2);
    }
    if text.lines().any(|l| l.starts_with("processes:")) {
        return Ok(Format::ProcessCompose);
    }
    if text.lines().any(|l| l.starts_with("services:")) {
        return Ok(Format::Compose);
    }
    bail!(
        "cannot tell which tool {} is for; name it with --from procfile|supervisord|process-compose|pm2|compose",
        source.display()
    )
}

/// Names every draft's service, gives copies `replicas:` and resolves
/// dependencies; each entry's fate goes into the report.
fn assemble(drafts: Vec<Draft>, report: &mut Report) -> IndexMap<String, Service> {
    let mut services: IndexMap<String, Service> = IndexMap::new();
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let mut skipped: HashMap<String, ()> = HashMap::new();
    let mut pending: Vec<(String, Vec<String>, Vec<PendingEdge>)> = Vec::new();
    for draft in drafts {
        let service = match (&draft.skipped, draft.service) {
            (None, Some(service)) => service,
            (why, _) => {
                let why = why.as_deref().unwrap_or("it runs nothing");
                report.entry(
                    draft.at.clone(),
                    &draft.what,
                    format!("not imported: {why}"),
                );
                skipped.insert(draft.name.clone(), ());
                continue;
            }
        };
        let service = replicas::replicated(service, draft.replicas, &draft.what, &draft.at, report);
        let replicated = service.replicas.is_some();
        let wanted = convert::service_name(&draft.name);
        let taken = |name: &str| name_taken(&services, name, replicated);
        let mut base = wanted.clone();
        let mut n = 2;
        while taken(&base) {
            base = format!("{wanted}_{n}");
            n += 1;
        }
        if base != draft.name {
            report.note(
                Some(draft.at.clone()),
                format!(
                    "{}: `{}` is not a Kepler service name (letters, digits, `_`, `.`, `-`), so it is `{base}`",
                    draft.what, draft.name
                ),
            );
        }
        let became = match service.replicas {
            None => format!("service `{base}`"),
            Some(0) => format!("service `{base}` with replicas: 0 (defined, not run)"),
            Some(1) => format!("service `{base}` with replicas: 1 (instance `{base}.1`)"),
            Some(2) => {
                format!("service `{base}` with replicas: 2 (instances `{base}.1`, `{base}.2`)")
            }
            Some(count) => format!(
                "service `{base}` with replicas: {count} (instances `{base}.1` … `{base}.{count}`)"
            ),
        };
        report.entry(draft.at.clone(), &draft.what, became);
        services.insert(base.clone(), service);
        names.insert(draft.name.clone(), vec![base.clone()]);
        pending.push((draft.what, vec![base], draft.deps));
    }
    for (what, dependents, edges) in pending {
        for PendingEdge { target, edge, at } in edges {
            let Some(targets) = names.get(&target) else {
                let why = if skipped.contains_key(&target) {
                    format!("`{target}` was not imported")
                } else {
                    format!("there is no `{target}` in the source")
                };
                report.drop_key(
                    at,
                    format!("{what} depends_on {target}"),
                    format!("{why}; the dependency is left out"),
                );
                continue;
            };
            let mut edge = edge;
            if edge.condition == Edge::HEALTHY
                && targets
                    .iter()
                    .any(|t| services.get(t).is_some_and(|s| s.healthcheck.is_none()))
            {
                report.note(
                    Some(at.clone()),
                    format!("`{target}` has no health check, so waiting for it to be healthy became waiting for it to start"),
                );
                edge.condition = Edge::STARTED;
            }
            for dependent in &dependents {
                if let Some(service) = services.get_mut(dependent) {
                    for target in targets {
                        service.depends_on.0.insert(target.clone(), edge.clone());
                    }
                }
            }
        }
    }
    services
}

/// Whether `name` cannot be used: a service has it, or it would share a
/// name with an instance (`web.2` beside a replicated `web`, or a
/// replicated `web` beside a service `web.2`).
fn name_taken(services: &IndexMap<String, Service>, name: &str, replicated: bool) -> bool {
    let numbered = |name: &str| {
        name.rsplit_once('.')
            .filter(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .map(|(base, _)| base.to_owned())
    };
    services.contains_key(name)
        || numbered(name)
            .is_some_and(|base| services.get(&base).is_some_and(|s| s.replicas.is_some()))
        || (replicated
            && services
                .keys()
                .any(|other| numbered(other).as_deref() == Some(name)))
}

/// Reports every key of `map` that the format's reader does not handle:
/// `mapped` keys are read elsewhere, `known` ones have a reason to be left
/// out, anything else is not a key of the tool at all.
pub fn check_keys(
    map: &Value,
    file: &Path,
    what: &str,
    mapped: &[&str],
    known: &[(&str, &str)],
    tool: Format,
    report: &mut Report,
) {
    for entry in map.entries() {
        if mapped.contains(&entry.key.as_str()) {
            continue;
        }
        let why = known
            .iter()
            .find(|(key, _)| *key == entry.key)
            .map(|(_, why)| (*why).to_owned())
            .unwrap_or_else(|| format!("not a {tool} setting that Kepler knows"));
        report.drop_key(
            Loc::new(file, entry.line),
            format!("{what} {}", entry.key),
            why,
        );
    }
}

/// The file's text, with its name in the error.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A file named relative to another source file.
pub fn sibling(of: &Path, name: &str) -> PathBuf {
    match of.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}
