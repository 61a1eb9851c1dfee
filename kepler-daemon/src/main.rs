//! `kepler-daemon`: the root daemon that runs Kepler's services.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kepler_daemon::daemon::{self, Daemon};
use kepler_daemon::detach;
use kepler_daemon::state_dir::{InstanceLock, StateDir};
use nix::sys::stat::{umask, Mode};
use nix::unistd::Uid;

#[derive(Parser)]
#[command(
    name = "kepler-daemon",
    version,
    about = "The Kepler process orchestrator daemon"
)]
struct Args {
    /// Fork into the background once the socket accepts connections.
    #[arg(long)]
    detach: bool,
    /// Print the hand-over formats this binary can resume, and exit (the
    /// pre-flight of `kepler daemon upgrade`).
    #[arg(long, hide = true)]
    handover_check: bool,
    /// Resume from the hand-over in this descriptor (given by the daemon
    /// this binary replaces in an upgrade).
    #[arg(long, hide = true, value_name = "FD")]
    resume: Option<i32>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g.
    /// 127.0.0.1:9464. Off unless given.
    #[arg(long, value_name = "ADDRESS", env = kepler_daemon::exporter::LISTEN_ENV)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Allow --metrics-listen on an address other machines can reach.
    #[arg(long, requires = "metrics_listen")]
    metrics_listen_public: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config and print its baked form, without a daemon, without
    /// writing anything. Exit 1 with every error found.
    Check {
        /// The config file.
        file: PathBuf,
        /// Print the bake as JSON for the daemon (used when the daemon bakes
        /// a non-root user's config with that user's rights).
        #[arg(long, hide = true)]
        transfer: bool,
        /// Print the baked config as the JSON view `kepler export` reads.
        #[arg(long, hide = true, conflicts_with = "transfer")]
        json: bool,
    },
}

/// See `memory.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator is configured from the program's constructors: Rust's
/// runtime allocates before `main`, and the first allocation reserves the
/// allocator's first arena.
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

extern "C" fn configure_allocator() {
    kepler_daemon::memory::configure_allocator();
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.handover_check {
        println!("{}", kepler_daemon::upgrade::format::check_line());
        return ExitCode::SUCCESS;
    }
    match args.command {
        None => serve(
            args.detach,
            args.resume,
            args.metrics_listen,
            args.metrics_listen_public,
        ),
        Some(Command::Check {
            file,
            transfer,
            json,
        }) => check(&file, transfer, json),
    }
}

fn check(file: &Path, transfer: bool, json: bool) -> ExitCode {
    // A bake worker gets the CLI's environment on stdin (its own is a fixed
    // minimum); `kepler check` uses the environment of whoever runs it.
    let sys_env: BTreeMap<String, String> = if transfer {
        match kepler_daemon::unprivileged_bake::WorkerInput::read_from(std::io::stdin().lock()) {
            Ok(input) => input.sys_env,
            Err(e) => return fail(e),
        }
    } else {
        std::env::vars().collect()
    };
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    match kepler_daemon::config::bake(&path, &sys_env) {
        Ok(baked) if transfer => {
            let transfer = kepler_daemon::unprivileged_bake::Transfer::from_baked(&baked);
            match serde_json::to_writer(std::io::stdout().lock(), &transfer) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("cannot write the bake: {e}")),
            }
        }
        Ok(baked) if json => {
            let view = kepler_daemon::config::config_view(&baked.config);
            match serde_json::to_writer(std::io::stdout().lock(), &view) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("cannot write the config view: {e}")),
            }
        }
        Ok(baked) => {
            print!("{}", kepler_daemon::config::render_snapshot(&baked.config));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// `ansi` is off when output goes to a file (`--detach` sends it to daemon.log).
fn init_tracing(ansi: bool) {
    let filter = std::env::var("KEPLER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// The metrics endpoint's socket, non-blocking, for a runtime to take.
fn bind_metrics(address: SocketAddr, public: bool) -> Result<std::net::TcpListener, String> {
    kepler_daemon::exporter::check_address(address, public)?;
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| format!("cannot listen on --metrics-listen {address}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on --metrics-listen {address}: {e}"))?;
    Ok(listener)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kepler-daemon: {message}");
    ExitCode::FAILURE
}

fn serve(
    detach: bool,
    resume: Option<i32>,
    metrics_listen: Option<SocketAddr>,
    public: bool,
) -> ExitCode {
    let uid = Uid::effective();
    if !uid.is_root() {
        return fail(format!(
            "must run as root (running as uid {uid}); start it with `sudo kepler daemon start`"
        ));
    }
    if let Some(Err(e)) = metrics_listen.map(|a| kepler_daemon::exporter::check_address(a, public))
    {
        return fail(e);
    }
    init_tracing(!detach && resume.is_none() && std::io::stderr().is_terminal());
    // Group members may read what the daemon writes; others get nothing.
    umask(Mode::from_bits_truncate(0o007));

    // After an upgrade: the socket, lock and children of the daemon this
    // binary replaced (same pid). Read before any thread exists, with the
    // open-file limit raised first: the previous program held many.
    if resume.is_some() {
        if let Err(e) = kepler_daemon::process::raise_fd_limit() {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
    let resumed = resume.and_then(|fd| match kepler_daemon::upgrade::resume_args(fd) {
        Ok(resumed) => Some(resumed),
        Err(e) => {
            tracing::error!("cannot resume from the hand-over ({e}); starting afresh");
            None
        }
    });
    let detach = detach && resume.is_none();

    let state = match StateDir::prepare(&kepler_protocol::state_dir()) {
        Ok(state) => state,
        Err(e) => return fail(e),
    };
    let (mut lock, listener, daemon_up, adoptions, connections, handed_metrics) = match resumed {
        Some(resumed) => (
            resumed.lock,
            resumed.listener,
            resumed.daemon_up,
            resumed.adoptions,
            resumed.connections,
            resumed.metrics_listener,
        ),
        None => {
            let lock = match InstanceLock::acquire(&state) {
                Ok(lock) => lock,
                Err(e) => return fail(e),
            };
            let listener = match state.bind_socket() {
                Ok(listener) => listener,
                Err(e) => return fail(format!("cannot listen: {e}")),
            };
            (
                lock,
                listener,
                Duration::ZERO,
                HashMap::new(),
                Vec::new(),
                None,
            )
        }
    };
    // Bound before detaching, so a refused or busy address is told on the
    // terminal that started the daemon.
    let metrics_listener = match (handed_metrics, metrics_listen) {
        // After an upgrade: the endpoint's socket, still open.
        (Some(listener), _) => Some(listener),
        (None, Some(address)) => match bind_metrics(address, public) {
            Ok(listener) => Some(listener),
            Err(e) => return fail(e),
        },
        (None, None) => None,
    };
    if let Some(listener) = &metrics_listener {
        use std::os::fd::AsRawFd;
        kepler_daemon::upgrade::remember_listener(
            kepler_daemon::upgrade::METRICS_LISTENER,
            listener.as_raw_fd(),
        );
    }
    let ready_pipe = if detach {
        match detach::daemonize(&state) {
            Ok(pipe) => Some(pipe),
            Err(e) => return fail(format!("cannot detach: {e}")),
        }
    } else {
        None
    };
    if let Err(e) = lock.write_pid(std::process::id()) {
        return fail(format!("cannot write {}: {e}", state.pid_path().display()));
    }

    // Before any thread starts: threads copy the niceness of their creator.
    let priority = kepler_daemon::process::priority::run_ahead_of_services();
    tracing::info!("priority: {priority}");
    // Services run in cgroups of this daemon's own subtree when a writable
    // cgroup v2 exists; the daemon moves itself into it before any thread
    // or child exists.
    let state_root = std::fs::canonicalize(state.root()).unwrap_or_else(|_| state.root().into());
    kepler_daemon::containment::init(&state_root);

    // Configs are baked in limited worker processes started from this binary.
    match std::env::current_exe() {
        Ok(exe) => kepler_daemon::unprivileged_bake::use_worker(exe),
        Err(e) => tracing::warn!("cannot find my own binary, baking in-process: {e}"),
    }
    // Orphaned grandchildren of services are reparented to us and reaped, and
    // many services mean many pipes.
    if let Err(e) = kepler_daemon::process::become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let raised = kepler_daemon::process::raise_fd_limit().map_err(|e| e.to_string());
    match &raised {
        Ok(raised) => match &raised.short_of_nr_open {
            None => tracing::info!(
                "open-file limit raised to {} (started with {})",
                raised.limit,
                raised.original
            ),
            Some(why) => tracing::warn!("open-file limit is {}: {why}", raised.limit),
        },
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    kepler_daemon::process::descriptors::init(raised);
    // Sized from the limit just raised, so made after it.
    if let Err(why) = kepler_daemon::logs::held::availability() {
        tracing::info!("service output pipes stay descriptors: {why}");
    }
    // Taken before the runtime's threads exist: it edits the environment.
    let notifier = kepler_daemon::notify::Notifier::from_env();
    kepler_daemon::upgrade::remember_startup(lock.raw_fds(), notifier.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let daemon = Daemon::resumed(state, daemon_up);
    daemon.adopt_connections(connections);
    let closing = daemon.closing_connections();
    let result = runtime.block_on(async move {
        if let Some(listener) = metrics_listener {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(kepler_daemon::exporter::serve(listener, daemon.clone()));
        }
        daemon::run_adopting(listener, daemon, adoptions, move || {
            if let Some(pipe) = ready_pipe {
                pipe.signal();
            }
            notifier.ready();
            notifier.stopping_when_raised(closing);
        })
        .await
    });
    kepler_daemon::containment::tear_down();
    drop(lock);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
