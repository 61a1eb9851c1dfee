//! The command line, as clap derives it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}
