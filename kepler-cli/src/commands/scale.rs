//! `kepler scale SERVICE=COUNT...`: returns once new instances run and
//! surplus ones have stopped; prints one line, e.g. `scaled web 1 → 4`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use kepler_protocol::{Request, Response, ScaledService};

use super::{not_loaded, request_printing_events};
use crate::cli::ScaleArgs;
use crate::client::Client;
use crate::config_ref::config_ref;

pub async fn run(file: Option<&Path>, args: ScaleArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let mut client = Client::connect().await?;
    let request = Request::Scale {
        config,
        services: args.services,
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
    };
    match request_printing_events(&mut client, request).await? {
        Response::Scaled(changes) => println!("{}", summary(&changes)),
        Response::NotLoaded { path } => bail!("nothing to scale: {}", not_loaded(&path)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `scaled web 1 → 4, worker 3 → 2`; a count that did not change says so.
fn summary(changes: &[ScaledService]) -> String {
    let parts: Vec<String> = changes
        .iter()
        .map(|c| {
            if c.from == c.to {
                format!("{} stays at {}", c.service, c.to)
            } else {
                format!("{} {} → {}", c.service, c.from, c.to)
            }
        })
        .collect();
    format!("scaled {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_one_line_naming_each_change() {
        let changes = [
            ScaledService {
                service: "web".into(),
                from: 1,
                to: 4,
            },
            ScaledService {
                service: "worker".into(),
                from: 2,
                to: 2,
            },
        ];
        assert_eq!(summary(&changes), "scaled web 1 → 4, worker stays at 2");
    }
}
