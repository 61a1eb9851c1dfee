//! `kepler ps [--all] [--json]`: the services of this config (or of every
//! loaded config) as a table, or as JSON for scripts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use comfy_table::{
    presets, Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Table, Width,
};
use kepler_protocol::{
    ConfigRef, ConfigServices, Event, Request, Response, ServiceInfo, ServiceStatus,
};
use serde::Serialize;

use crate::cli::PsArgs;
use crate::client::Client;
use crate::config_ref::config_ref;
use crate::human_size::{human_bytes, human_percent};
use crate::human_time::human_duration;
use crate::style::{self, Paint};
use crate::terminal_text::TextMode;

/// Space between columns; the table has no borders.
const COLUMN_GAP: u16 = 2;
/// Narrower than this, a wrapped reason is unreadable; the line runs over instead.
const MIN_REASON_WIDTH: u16 = 20;

pub async fn run(file: Option<&Path>, args: PsArgs) -> Result<ExitCode> {
    // `--all` needs no config file, so it works from any directory.
    let config = if args.all {
        None
    } else {
        Some(config_ref(file)?)
    };
    let path = config.as_ref().map(|c| c.path.clone());
    let mut client = Client::connect().await?;
    let mut configs = request_ps(&mut client, config).await?;
    if !args.json {
        show_safely(&mut configs, TextMode::for_stdout(false));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_rows(&configs))?);
    } else if configs.iter().all(|c| c.services.is_empty()) {
        match path {
            Some(path) if configs.is_empty() => println!("{}", super::not_loaded(&path)),
            Some(path) => println!("{} has no services", path.display()),
            None => println!("no configs are loaded"),
        }
    } else {
        let paint = Paint::for_stdout();
        let width = std::io::stdout()
            .is_terminal()
            .then(|| Table::new().width())
            .flatten();
        println!("{}", render_table(&configs, args.all, paint, width));
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks for `ps` and puts the answer together: each config's services come
/// in parts before the answer that lists the configs.
pub async fn request_ps(
    client: &mut Client,
    config: Option<ConfigRef>,
) -> Result<Vec<ConfigServices>> {
    let parts = std::cell::RefCell::new(Vec::<ConfigServices>::new());
    let response = client
        .read_with_events(
            Request::Ps { config },
            |event| {
                if let Event::PsPart(part) = event {
                    let mut parts = parts.borrow_mut();
                    match parts.last_mut() {
                        Some(last) if last.path == part.path => last.services.extend(part.services),
                        _ => parts.push(part),
                    }
                }
            },
            // A cut-short attempt's parts are not this answer's.
            || parts.borrow_mut().clear(),
        )
        .await?;
    let parts = parts.into_inner();
    let Response::Ps(configs) = response else {
        bail!("unexpected answer from the daemon: {response:?}");
    };
    let mut parts = parts.into_iter().peekable();
    Ok(configs
        .into_iter()
        .map(|mut config| {
            let mut services = Vec::new();
            while let Some(part) = parts.next_if(|part| part.path == config.path) {
                services.extend(part.services);
            }
            services.append(&mut config.services);
            config.services = services;
            config
        })
        .collect())
}

/// Paths and reasons quote what config owners wrote; on a terminal their
/// control characters are shown, not sent. (JSON escapes them anyway.)
fn show_safely(configs: &mut [ConfigServices], mode: TextMode) {
    for config in configs {
        let path = mode.show(&config.path.to_string_lossy()).into_owned();
        config.path = PathBuf::from(path);
        for reason in config.services.iter_mut().filter_map(|s| s.reason.as_mut()) {
            *reason = mode.show(reason).into_owned();
        }
    }
}

/// The table, without a final newline. `width` (the terminal's) wraps long
/// cells; `None` lets rows be as long as their content.
pub fn render_table(
    configs: &[ConfigServices],
    with_config: bool,
    paint: Paint,
    width: Option<u16>,
) -> String {
    let rows: Vec<(&Path, &ServiceInfo)> = configs
        .iter()
        .flat_map(|c| c.services.iter().map(move |s| (c.path.as_path(), s)))
        .collect();
    let with_reason = rows.iter().any(|(_, s)| s.reason.is_some());

    let mut table = Table::new();
    // Never ask the terminal ourselves: the caller decides colour and width.
    table.load_style(presets::NOTHING).force_no_tty();
    if paint.enabled() {
        table.enforce_styling();
    }
    if let Some(width) = width {
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width(width);
    }

    let mut header = Vec::new();
    if with_config {
        header.push("CONFIG");
    }
    header.extend([
        "NAME", "STATUS", "PID", "UPTIME", "CPU", "MEM", "HEALTH", "RESTARTS",
    ]);
    if with_reason {
        header.push("REASON");
    }
    table.set_header(header.into_iter().map(|title| {
        let cell = Cell::new(title);
        if paint.enabled() {
            cell.add_attribute(Attribute::Bold)
        } else {
            cell
        }
    }));

    for (path, service) in rows {
        let mut row = Vec::new();
        if with_config {
            row.push(Cell::new(path.display()));
        }
        row.push(Cell::new(&service.name));
        row.push(status_cell(service.status));
        row.push(Cell::new(optional(service.pid)));
        row.push(Cell::new(
            service.uptime_secs.map(human_duration).unwrap_or_default(),
        ));
        row.push(Cell::new(
            service.cpu_percent.map(human_percent).unwrap_or_default(),
        ));
        row.push(Cell::new(
            service.memory_bytes.map(human_bytes).unwrap_or_default(),
        ));
        row.push(Cell::new(health(service.health_failures)));
        row.push(Cell::new(service.restarts));
        if with_reason {
            row.push(Cell::new(service.reason.as_deref().unwrap_or_default()));
        }
        table.add_row(row);
    }

    let columns = table.column_count();
    for (index, column) in table.column_iter_mut().enumerate() {
        let last = index + 1 == columns;
        column.set_padding((0, if last { 0 } else { COLUMN_GAP }));
        // Only the reason wraps on a narrow terminal; paths and names broken
        // mid-word are harder to read than a line that runs over.
        column.set_constraint(if last && with_reason {
            ColumnConstraint::LowerBoundary(Width::Fixed(MIN_REASON_WIDTH))
        } else {
            ColumnConstraint::ContentWidth
        });
    }
    table.trim_fmt()
}

/// Green when up and well, yellow in between, red when it went wrong, dim
/// when stopped. Styles only show when the table enforces styling.
fn status_cell(status: ServiceStatus) -> Cell {
    let cell = Cell::new(status.name());
    match status {
        _ if style::went_wrong(status) => cell.fg(Color::Red),
        ServiceStatus::Running | ServiceStatus::Healthy => cell.fg(Color::Green),
        ServiceStatus::Starting | ServiceStatus::Stopping | ServiceStatus::Unhealthy => {
            cell.fg(Color::Yellow)
        }
        _ => cell.add_attribute(Attribute::Dim),
    }
}

/// `ok`, `1 fail`, `3 fails`; empty without a healthcheck.
fn health(failures: Option<u32>) -> String {
    match failures {
        None => String::new(),
        Some(0) => "ok".into(),
        Some(1) => "1 fail".into(),
        Some(n) => format!("{n} fails"),
    }
}

fn optional(value: Option<u32>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// One service in `ps --json`. Field names are part of the CLI's interface:
/// keep them stable.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonRow {
    pub config: PathBuf,
    /// What runs: the service (`web`), or an instance of a service with
    /// `replicas:` (`web.2`).
    pub name: String,
    /// The service it is: `web` for both `web` and `web.2`.
    pub service: String,
    /// The instance's number (`2` for `web.2`); null without `replicas:`.
    pub replica: Option<u32>,
    /// `stopped`, `starting`, `running`, `healthy`, `unhealthy`, `stopping`,
    /// `exited` or `failed`.
    pub status: &'static str,
    /// Set when `status` is `exited`.
    pub exit_code: Option<i32>,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub health_failures: Option<u32>,
    pub reason: Option<String>,
    /// CPU use since the previous `ps` (100 = one CPU), while it runs.
    pub cpu_percent: Option<f64>,
    /// Memory in use, in bytes, while it runs.
    pub memory_bytes: Option<u64>,
    /// CPU time used so far by the running process and its children.
    pub cpu_seconds: Option<f64>,
}

pub fn json_rows(configs: &[ConfigServices]) -> Vec<JsonRow> {
    configs
        .iter()
        .flat_map(|config| {
            config.services.iter().map(|service| JsonRow {
                config: config.path.clone(),
                name: service.name.clone(),
                service: service.service.clone(),
                replica: service.replica,
                status: status_word(service.status),
                exit_code: match service.status {
                    ServiceStatus::Exited(code) => Some(code),
                    _ => None,
                },
                pid: service.pid,
                uptime_secs: service.uptime_secs,
                restarts: service.restarts,
                health_failures: service.health_failures,
                reason: service.reason.clone(),
                cpu_percent: service.cpu_percent,
                memory_bytes: service.memory_bytes,
                cpu_seconds: service.cpu_seconds,
            })
        })
        .collect()
}

fn status_word(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Stopped => "stopped",
        ServiceStatus::Starting => "starting",
        ServiceStatus::Running => "running",
        ServiceStatus::Healthy => "healthy",
        ServiceStatus::Unhealthy => "unhealthy",
        ServiceStatus::Stopping => "stopping",
        ServiceStatus::Exited(_) => "exited",
        ServiceStatus::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, status: ServiceStatus) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            status,
            pid: None,
            uptime_secs: None,
            restarts: 0,
            health_failures: None,
            reason: None,
            cpu_percent: None,
            memory_bytes: None,
            cpu_seconds: None,
            service: name.into(),
            replica: None,
        }
    }

    fn app() -> ConfigServices {
        ConfigServices {
            path: "/srv/app/kepler.yaml".into(),
            services: vec![
                ServiceInfo {
                    pid: Some(4242),
                    uptime_secs: Some(182),
                    health_failures: Some(0),
                    cpu_percent: Some(12.5),
                    memory_bytes: Some(38 << 20 | 400 << 10),
                    cpu_seconds: Some(22.75),
                    ..service("web", ServiceStatus::Healthy)
                },
                ServiceInfo {
                    pid: Some(4300),
                    uptime_secs: Some(3 * 3600 + 60),
                    restarts: 2,
                    health_failures: Some(3),
                    cpu_percent: Some(0.0),
                    memory_bytes: Some(512 << 10),
                    cpu_seconds: Some(1.5),
                    ..service("worker", ServiceStatus::Unhealthy)
                },
                service("migrate", ServiceStatus::Exited(0)),
            ],
        }
    }

    fn broken() -> ConfigServices {
        ConfigServices {
            path: "/srv/other/kepler.yml".into(),
            services: vec![ServiceInfo {
                restarts: 5,
                reason: Some("exited (1) 5 times; gave up".into()),
                ..service("api", ServiceStatus::Failed)
            }],
        }
    }

    #[test]
    fn the_table_of_one_config_has_no_config_or_reason_column() {
        let table = render_table(&[app()], false, Paint::PLAIN, None);
        let expected = "\
NAME     STATUS      PID   UPTIME  CPU    MEM    HEALTH   RESTARTS
web      healthy     4242  3m 2s   12.5%  38.4M  ok       0
worker   unhealthy   4300  3h 1m   0.0%   512K   3 fails  2
migrate  exited (0)                                       0";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn all_adds_a_config_column_and_any_reason_adds_a_reason_column() {
        let table = render_table(&[app(), broken()], true, Paint::PLAIN, None);
        let expected = "\
CONFIG                 NAME     STATUS      PID   UPTIME  CPU    MEM    HEALTH   RESTARTS  REASON
/srv/app/kepler.yaml   web      healthy     4242  3m 2s   12.5%  38.4M  ok       0
/srv/app/kepler.yaml   worker   unhealthy   4300  3h 1m   0.0%   512K   3 fails  2
/srv/app/kepler.yaml   migrate  exited (0)                                       0
/srv/other/kepler.yml  api      failed                                           5         exited (1) 5 times; gave up";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn a_long_reason_wraps_to_fit_the_width_it_is_given() {
        let table = render_table(&[app(), broken()], false, Paint::PLAIN, Some(90));
        for line in table.lines() {
            let len = line.chars().count();
            assert!(len <= 90, "{line:?} is {len} long\n{table}");
        }
        let reason: Vec<&str> = table.split_whitespace().skip_while(|w| *w != "5").collect();
        assert_eq!(
            reason.join(" "),
            "5 exited (1) 5 times; gave up",
            "\n{table}"
        );
        assert_eq!(
            table.lines().count(),
            6,
            "the reason takes two lines\n{table}"
        );
    }

    #[test]
    fn on_a_narrow_terminal_paths_stay_whole_and_the_reason_readable() {
        let table = render_table(&[app(), broken()], true, Paint::PLAIN, Some(80));
        assert!(table.contains("/srv/other/kepler.yml"), "\n{table}");
        assert!(table.contains("exited (1) 5 times;"), "\n{table}");
    }

    #[test]
    fn statuses_are_coloured_only_with_colour() {
        let plain = render_table(&[app(), broken()], false, Paint::PLAIN, None);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = render_table(&[app(), broken()], false, Paint::COLOUR, None);
        assert!(coloured.contains('\x1b'), "{coloured:?}");
    }

    #[test]
    fn replicas_are_rows_of_their_own_naming_service_and_number() {
        let replica = |n: u32, pid: u32| ServiceInfo {
            pid: Some(pid),
            service: "web".into(),
            replica: Some(n),
            ..service(&format!("web.{n}"), ServiceStatus::Running)
        };
        let config = ConfigServices {
            path: "/srv/app/kepler.yaml".into(),
            services: vec![replica(1, 10), replica(2, 11)],
        };
        let table = render_table(std::slice::from_ref(&config), false, Paint::PLAIN, None);
        assert!(table.contains("web.1  running  10"), "\n{table}");
        assert!(table.contains("web.2  running  11"), "\n{table}");
        let value = serde_json::to_value(json_rows(&[config])).unwrap();
        assert_eq!(value[1]["name"], "web.2");
        assert_eq!(value[1]["service"], "web");
        assert_eq!(value[1]["replica"], 2);
    }

    #[test]
    fn json_rows_have_stable_lower_case_field_names() {
        let value = serde_json::to_value(json_rows(&[app(), broken()])).unwrap();
        let first = value[0].as_object().unwrap();
        let mut names: Vec<_> = first.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "config",
                "cpu_percent",
                "cpu_seconds",
                "exit_code",
                "health_failures",
                "memory_bytes",
                "name",
                "pid",
                "reason",
                "replica",
                "restarts",
                "service",
                "status",
                "uptime_secs"
            ]
        );
        assert_eq!(value[0]["name"], "web");
        assert_eq!(value[0]["service"], "web");
        assert!(value[0]["replica"].is_null());
        assert_eq!(value[0]["cpu_percent"], 12.5);
        assert_eq!(value[0]["memory_bytes"], 38 << 20 | 400 << 10);
        assert_eq!(value[0]["cpu_seconds"], 22.75);
        assert!(value[2]["cpu_percent"].is_null());
        assert_eq!(value[0]["config"], "/srv/app/kepler.yaml");
        assert_eq!(value[0]["status"], "healthy");
        assert_eq!(value[0]["pid"], 4242);
        assert_eq!(value[2]["status"], "exited");
        assert_eq!(value[2]["exit_code"], 0);
        assert_eq!(value[3]["status"], "failed");
        assert_eq!(value[3]["reason"], "exited (1) 5 times; gave up");
        assert!(value[3]["pid"].is_null());
    }
}
