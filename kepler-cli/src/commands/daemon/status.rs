//! `kepler daemon status`: exit 0 and details when running, exit 1 otherwise.

use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{Request, Response};

use crate::client::Client;
use crate::human_time::human_duration;
use crate::terminal_text::TextMode;

pub async fn run() -> Result<ExitCode> {
    let mut client = Client::connect().await?;
    let status = match client.request(Request::DaemonStatus).await? {
        Response::DaemonStatus(status) => status,
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    println!("kepler daemon is running");
    println!("  pid:         {}", status.pid);
    println!("  version:     {}", status.version);
    println!("  uptime:      {}", human_duration(status.uptime_secs));
    println!("  state dir:   {}", status.state_dir.display());
    println!("  containment: {}", status.containment);
    println!("  open files:  {}", status.open_files);
    println!("  priority:    {}", status.priority);
    if !status.limit_notes.is_empty() {
        println!("  limits not enforced as configured:");
        for note in &status.limit_notes {
            println!("    {note}");
        }
    }
    if status.configs.is_empty() {
        println!("  configs:     none loaded");
    } else {
        println!("  configs:");
        // Paths name other users' files; shown, not sent, on a terminal.
        let mode = TextMode::for_stdout(false);
        for config in &status.configs {
            println!(
                "    {}  ({} services, {} running)",
                mode.show(&config.path.to_string_lossy()),
                config.services,
                config.running
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
