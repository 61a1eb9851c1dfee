//! The command line, as clap derives it.
//!
//! Values with a grammar of their own (durations, signals) are parsed here by
//! clap value parsers, so a bad value is reported before anything is sent.

mod duration;
mod signal;
mod time_bound;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

pub use crate::bridges::import::Format as ImportFormat;

pub use duration::parse_duration;
pub use signal::parse_signal;
pub use time_bound::{now_us, parse_time_bound, TimeBound};

#[derive(Parser, Debug)]
#[command(
    name = "kepler",
    version,
    about = "Run your services in dependency order, keep them healthy, keep their logs",
    propagate_version = true
)]
pub struct Cli {
    /// Config file (default: kepler.yaml, then kepler.yml, in the current directory).
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Print more detail about what is happening.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the Kepler daemon itself.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Start services (all when none are named) and what they depend on.
    ///
    /// Without -d, follows their output until every service has stopped or
    /// failed; Ctrl+C stops them (press it twice to leave without waiting).
    Start(StartArgs),
    /// Stop services (all when none are named); dependents stop first.
    Stop(StopArgs),
    /// Stop then start services (all when none are named).
    ///
    /// Without -d, follows their output like `kepler start`.
    Restart(StartArgs),
    /// Run services once, for CI: bake the config afresh from its file,
    /// start like `kepler start`, and remove the config's stored state once
    /// every service has ended.
    ///
    /// Exits 0 when every service ended well (exit 0, or stopped by you),
    /// else with the exit code of the first service that failed (1 for one
    /// that could not start).
    Run(RunArgs),
    /// Bake the config again from its file; every service must be stopped.
    Recreate,
    /// List the services of the config and their states.
    Ps(PsArgs),
    /// Show the stored output of services (all when none are named),
    /// merged in time order.
    Logs(LogsArgs),
    /// Remove the state of configs that have nothing running (--force: all).
    Prune(PruneArgs),
    /// Change how many instances services with `replicas:` run
    /// (e.g. `kepler scale web=4 worker=2`).
    ///
    /// Returns once new instances run and surplus ones (the highest
    /// numbers) have stopped. The counts are kept until `kepler recreate`.
    Scale(ScaleArgs),
    /// Check the config file and print it as the daemon would run it.
    Check,
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Write a kepler.yaml from a Procfile, supervisord.conf,
    /// process-compose.yaml, pm2 ecosystem file or docker-compose.yml.
    ///
    /// Prints to stderr what each entry became and every setting that was
    /// not carried over, with its file and line.
    Import(ImportArgs),
    /// Turn the config into systemd units, a Nomad job or Kubernetes
    /// manifests. No daemon needed; prints to stderr what the target cannot
    /// express.
    #[command(subcommand)]
    Export(ExportCommand),
    /// CPU and memory of services over a window (min/avg/max), restarts and
    /// the last sample, from the daemon's stored history.
    Stats(StatsArgs),
    /// A full-screen view of the services, updated as they change: status,
    /// health, pid, uptime, restarts, CPU, memory and their recent history.
    ///
    /// Keys: arrows or j/k select, s changes the sort column, / filters by
    /// name, Enter shows the selected service's live logs (Esc goes back),
    /// r restarts and x stops it (asking y/n first), q quits.
    Top(TopArgs),
    /// The config and its services (all when none are named) as JSON:
    /// baked settings and runtime state.
    Inspect(InspectArgs),
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StatsArgs {
    /// How far back to look, e.g. 10m, 1h, 1d (default: everything kept).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Services to show (default: all).
    pub services: Vec<String>,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct TopArgs {
    /// Show the services of every config you may see, not just this one.
    #[arg(long)]
    pub all: bool,
    /// Print one frame as plain text and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct InspectArgs {
    /// Services to describe (default: all).
    pub services: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// One unit per service plus <NAME>.target that starts them all.
    Systemd {
        /// Directory to write the units into (created if missing).
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        #[command(flatten)]
        common: ExportCommon,
    },
    /// A Nomad job in the JSON form of the HTTP API (raw_exec tasks).
    Nomad {
        /// Where to write the job; `-` is stdout.
        #[arg(short, long, value_name = "FILE", default_value = "-")]
        output: PathBuf,
        #[command(flatten)]
        common: ExportCommon,
    },
    /// Kubernetes manifests: a Deployment (or Job) per service with an image.
    Kubernetes {
        /// The container image of a service; services without one are not exported.
        #[arg(long = "image", value_name = "SERVICE=IMAGE", value_parser = parse_image)]
        images: Vec<(String, String)>,
        /// Image of the init containers that wait for dependencies (needs kubectl).
        #[arg(long, value_name = "IMAGE", default_value = "bitnami/kubectl:latest")]
        wait_image: String,
        /// Where to write the manifests; `-` is stdout.
        #[arg(short, long, value_name = "FILE", default_value = "-")]
        output: PathBuf,
        #[command(flatten)]
        common: ExportCommon,
    },
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ExportCommon {
    /// Name of the stack (default: the config directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace files that already exist.
    #[arg(long)]
    pub force: bool,
}

fn parse_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((service, image)) if !service.is_empty() && !image.is_empty() => {
            Ok((service.to_owned(), image.to_owned()))
        }
        _ => Err(format!(
            "`{text}` is not SERVICE=IMAGE (e.g. web=registry.example/web:1.4)"
        )),
    }
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ImportArgs {
    /// The file to import.
    #[arg(value_name = "FILE")]
    pub source: PathBuf,
    /// Where to write the config; `-` writes it to stdout.
    #[arg(short, long, value_name = "FILE", default_value = "kepler.yaml")]
    pub output: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// The tool the file is for (default: recognised from its name and content).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub from: Option<ImportFormat>,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written (Ctrl+C to stop).
    #[arg(long, conflicts_with = "head")]
    pub follow: bool,
    /// Only the first N lines.
    #[arg(long, value_name = "N", conflicts_with = "tail")]
    pub head: Option<usize>,
    /// Only the last N lines (with --follow: start with them; default 10000).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Hide lines written by hooks and Kepler's own notes.
    #[arg(long)]
    pub no_hook: bool,
    /// Show the time each line was stored.
    #[arg(long, conflicts_with_all = ["raw", "json"])]
    pub timestamps: bool,
    /// Print only what services wrote, byte for byte: no `service |`
    /// prefix, no colour, no Kepler notes. Without it, on a terminal,
    /// control characters (escape sequences) are shown as `\x1b` and the
    /// like instead of being sent to the terminal.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// One JSON object per line: time, service, replica, stream, hook, line.
    #[arg(long)]
    pub json: bool,
    /// Only lines stored since T: a duration meaning that long ago (10m,
    /// 1h30m, 2d) or an RFC 3339 time (2026-11-23T18:00:00Z).
    #[arg(long, value_name = "T", value_parser = parse_time_bound)]
    pub since: Option<TimeBound>,
    /// Only lines stored until T (same forms as --since).
    #[arg(long, value_name = "T", value_parser = parse_time_bound)]
    pub until: Option<TimeBound>,
    /// Only lines matching PATTERN, a regular expression (Rust's regex
    /// syntax), matched against each line by the daemon.
    #[arg(long, value_name = "PATTERN")]
    pub grep: Option<String>,
    /// With --grep: ignore case.
    #[arg(short = 'i', long, requires = "grep")]
    pub ignore_case: bool,
    /// Services to show (default: all).
    pub services: Vec<String>,
}

/// How `start` and `restart` keep the terminal.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StartArgs {
    /// Return once the services are launched; startup goes on in the background.
    #[arg(short, long)]
    pub detach: bool,

    /// With -d: return once the startup cluster is ready, or fail naming what failed.
    #[arg(long, requires = "detach")]
    pub wait: bool,

    /// With --wait: give up after this long (e.g. 500ms, 30s, 5m, 1h, 1d).
    #[arg(long, requires = "wait", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// With --wait: `auto` redraws one line per service in place on a
    /// terminal; `plain` prints one line per change.
    #[arg(long, value_enum, value_name = "STYLE", default_value = "auto")]
    pub progress: ProgressChoice,

    /// Without -d: print only what services write, byte for byte: no
    /// `service |` prefix, no colour, no Kepler notes. Without it, on a
    /// terminal, control characters are shown as `\x1b` and the like.
    #[arg(long, conflicts_with_all = ["detach", "json"])]
    pub raw: bool,

    /// Without -d: one JSON object per line of output (time, service,
    /// replica, stream, hook, line); Kepler's notes as service `kepler`.
    #[arg(long, conflicts_with = "detach")]
    pub json: bool,

    /// Services to act on (default: all).
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// How `--wait` shows its progress.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProgressChoice {
    /// Lines redrawn in place on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// One line per change, always.
    Plain,
}

/// `kepler run`: the modes of `start`, and how the run ends.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,

    /// Keep the config's snapshot, state and logs after the run.
    #[arg(long)]
    pub keep_state: bool,

    /// Stop every service at the first failure that will not be retried,
    /// and exit with that service's code.
    #[arg(long)]
    pub abort_on_failure: bool,

    /// Stop every service once SERVICE has ended, and exit with its code.
    #[arg(long, value_name = "SERVICE")]
    pub exit_code_from: Option<String>,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct StopArgs {
    /// Signal to send instead of each service's stop_signal (e.g. TERM, SIGKILL, 9).
    #[arg(short, long, value_name = "SIGNAL", value_parser = parse_signal)]
    pub signal: Option<i32>,

    /// Undo the whole config: after stopping, run the pre_cleanup hook and
    /// remove its stored state (snapshot, state, logs); the next start bakes
    /// it afresh and runs on_init again.
    #[arg(long)]
    pub clean: bool,

    /// Services to stop (default: all).
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PsArgs {
    /// Show the services of every loaded config, not just this one.
    #[arg(long)]
    pub all: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ScaleArgs {
    /// Give up waiting for new instances after this long (e.g. 30s); the
    /// new counts are kept either way.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// SERVICE=COUNT, one or more; COUNT from 0 to 1024.
    #[arg(value_name = "SERVICE=COUNT", required = true, value_parser = parse_scale)]
    pub services: Vec<(String, u32)>,
}

/// The most instances `kepler scale` asks for; the daemon checks it too.
const MAX_REPLICAS: u32 = 1024;

fn parse_scale(text: &str) -> Result<(String, u32), String> {
    let Some((service, count)) = text.split_once('=') else {
        return Err(format!("`{text}` is not SERVICE=COUNT (e.g. web=4)"));
    };
    if service.is_empty() {
        return Err(format!(
            "`{text}` names no service; write SERVICE=COUNT (e.g. web=4)"
        ));
    }
    match count.parse::<u32>() {
        Ok(count) if count <= MAX_REPLICAS => Ok((service.to_owned(), count)),
        _ => Err(format!(
            "`{count}` in `{text}` is not a count of replicas: use a whole number from 0 to \
             {MAX_REPLICAS}"
        )),
    }
}

#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct PruneArgs {
    /// Also stop configs that still have services running, then remove them.
    #[arg(long)]
    pub force: bool,

    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Start the daemon (must be root). Runs in the foreground unless -d.
    Start {
        /// Run in the background; returns once the daemon answers.
        #[arg(short, long)]
        detach: bool,
    },
    /// Stop every service of every config, then stop the daemon.
    Stop,
    /// Stop the daemon if it runs, then start it again.
    Restart {
        /// Run in the background; returns once the daemon answers.
        #[arg(short, long)]
        detach: bool,
    },
    /// Show the daemon's pid, version, uptime and loaded configs.
    Status,
    /// Hand the running daemon over to a new binary without stopping or
    /// restarting any service (root only). Requests in flight (attached
    /// start, logs --follow, --wait) end and must be run again.
    Upgrade {
        /// The new kepler-daemon (default: the file at the path the running
        /// daemon was started from, which a package upgrade replaces).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kepler").chain(args.iter().copied()))
    }

    #[test]
    fn logs_takes_time_bounds_and_a_pattern() {
        match parse(&[
            "logs",
            "--since",
            "10m",
            "--until",
            "2001-09-09T01:46:40Z",
            "--grep",
            "err(or)?",
            "-i",
            "--tail",
            "5",
            "--json",
            "web",
        ])
        .unwrap()
        .command
        {
            Command::Logs(args) => {
                assert_eq!(args.since, Some(TimeBound::Ago(Duration::from_secs(600))));
                assert_eq!(args.until, Some(TimeBound::At(1_000_000_000_000_000)));
                assert_eq!(args.grep.as_deref(), Some("err(or)?"));
                assert!(args.ignore_case && args.json);
                assert_eq!(args.tail, Some(5));
            }
            other => panic!("expected logs, got {other:?}"),
        }
        let err = parse(&["logs", "--since", "yesterday"]).unwrap_err();
        assert!(err.to_string().contains("yesterday"), "{err}");
        assert!(parse(&["logs", "-i"]).is_err(), "-i needs --grep");
    }

    #[test]
    fn run_takes_the_start_modes_and_how_the_run_ends() {
        match parse(&[
            "run",
            "--abort-on-failure",
            "--exit-code-from",
            "tests",
            "--keep-state",
            "web",
            "tests",
        ])
        .unwrap()
        .command
        {
            Command::Run(args) => {
                assert!(args.abort_on_failure && args.keep_state);
                assert_eq!(args.exit_code_from.as_deref(), Some("tests"));
                assert_eq!(args.start.services, ["web", "tests"]);
                assert!(!args.start.detach);
            }
            other => panic!("expected run, got {other:?}"),
        }
        match parse(&["run", "-d", "--wait", "--progress", "plain"])
            .unwrap()
            .command
        {
            Command::Run(args) => {
                assert!(args.start.detach && args.start.wait);
                assert_eq!(args.start.progress, ProgressChoice::Plain);
            }
            other => panic!("expected run, got {other:?}"),
        }
        assert!(parse(&["run", "--wait"]).is_err());
        assert!(parse(&["start", "-d", "--wait", "--progress", "fancy"]).is_err());
    }

    fn start_args(args: &[&str]) -> StartArgs {
        match parse(args).expect("valid command line").command {
            Command::Start(args) | Command::Restart(args) => args,
            other => panic!("expected start or restart, got {other:?}"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_without_detach_is_rejected() {
        let err = parse(&["start", "--wait"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
        assert!(err.to_string().contains("--detach"), "{err}");
    }

    #[test]
    fn timeout_without_wait_is_rejected() {
        let err = parse(&["start", "-d", "--timeout", "5s"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
        assert!(err.to_string().contains("--wait"), "{err}");
        let err = parse(&["restart", "--timeout", "5s"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
    }

    #[test]
    fn detach_wait_and_timeout_together_are_accepted() {
        let args = start_args(&["start", "-d", "--wait", "--timeout", "90s", "web", "db"]);
        assert!(args.detach && args.wait);
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
        assert_eq!(args.services, ["web", "db"]);
        let args = start_args(&["restart", "-d", "--wait"]);
        assert!(args.detach && args.wait && args.timeout.is_none());
    }

    #[test]
    fn a_bad_timeout_is_rejected_naming_the_value() {
        let err = parse(&["start", "-d", "--wait", "--timeout", "soon"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn stop_takes_a_signal_clean_and_services() {
        match parse(&["stop", "-s", "kill", "--clean", "web"])
            .unwrap()
            .command
        {
            Command::Stop(args) => {
                assert_eq!(args.signal, Some(9));
                assert!(args.clean);
                assert_eq!(args.services, ["web"]);
            }
            other => panic!("expected stop, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_signal_is_rejected_naming_the_value() {
        let err = parse(&["stop", "--signal", "SIGNOPE"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("SIGNOPE"), "{err}");
    }

    #[test]
    fn export_kubernetes_takes_images_as_service_equals_image() {
        match parse(&[
            "export",
            "kubernetes",
            "--image",
            "web=reg/web:1",
            "--image",
            "db=postgres:16",
        ])
        .unwrap()
        .command
        {
            Command::Export(ExportCommand::Kubernetes { images, output, .. }) => {
                assert_eq!(
                    images,
                    [
                        ("web".into(), "reg/web:1".into()),
                        ("db".into(), "postgres:16".into())
                    ]
                );
                assert_eq!(output, PathBuf::from("-"));
            }
            other => panic!("expected export kubernetes, got {other:?}"),
        }
        let err = parse(&["export", "kubernetes", "--image", "web"]).unwrap_err();
        assert!(err.to_string().contains("SERVICE=IMAGE"), "{err}");
    }

    #[test]
    fn import_defaults_to_kepler_yaml_and_knows_the_formats() {
        match parse(&["import", "Procfile"]).unwrap().command {
            Command::Import(args) => {
                assert_eq!(args.output, PathBuf::from("kepler.yaml"));
                assert!(!args.force && args.from.is_none());
            }
            other => panic!("expected import, got {other:?}"),
        }
        assert!(parse(&["import", "x", "--from", "process-compose"]).is_ok());
        assert!(parse(&["import", "x", "--from", "circus"]).is_err());
    }

    #[test]
    fn scale_takes_service_equals_count_within_bounds() {
        match parse(&["scale", "web=4", "worker=0", "--timeout", "30s"])
            .unwrap()
            .command
        {
            Command::Scale(args) => {
                assert_eq!(args.services, [("web".into(), 4), ("worker".into(), 0)]);
                assert_eq!(args.timeout, Some(Duration::from_secs(30)));
            }
            other => panic!("expected scale, got {other:?}"),
        }
        for bad in ["web", "=3", "web=-1", "web=1025", "web=many"] {
            let err = parse(&["scale", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        let err = parse(&["scale"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
    }

    #[test]
    fn file_is_accepted_after_the_verb() {
        let cli = parse(&["ps", "-f", "other.yml", "--all"]).unwrap();
        assert_eq!(cli.file, Some(PathBuf::from("other.yml")));
        assert!(matches!(
            cli.command,
            Command::Ps(PsArgs {
                all: true,
                json: false
            })
        ));
    }
}
