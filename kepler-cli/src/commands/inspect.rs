//! `kepler inspect [SERVICE...]`: the config and its services as JSON.
//! The field names are documented in docs/observability.md and stable.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use kepler_protocol::{Request, Response};
use serde_json::{json, Value};

use crate::cli::InspectArgs;
use crate::client::Client;
use crate::config_ref::config_ref;

pub async fn run(file: Option<&Path>, args: InspectArgs) -> Result<ExitCode> {
    let config = config_ref(file)?;
    let path = config.path.clone();
    let mut client = Client::connect().await?;
    let request = Request::Inspect {
        config,
        services: args.services,
    };
    let inspection = match crate::client::into_result(client.request(request).await?)? {
        Response::Inspect(inspection) => inspection,
        Response::NotLoaded { .. } => bail!("{}", super::not_loaded(&path)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    let services = inspection
        .services
        .iter()
        .map(|service| {
            let config: Value = serde_json::from_str(&service.config_json)
                .with_context(|| format!("the daemon sent a bad config for `{}`", service.name))?;
            Ok(json!({
                "name": service.name,
                "config": config,
                "state": {
                    "status": service.status,
                    "pid": service.pid,
                    "started_at_ms": service.started_at_ms,
                    "exit_code": service.exit_code,
                    "exit_signal": service.exit_signal,
                    "restarts": service.restarts,
                    "reason": service.reason,
                    "health": service.health.as_ref().map(|health| json!({
                        "status": health.status,
                        "consecutive_failures": health.consecutive_failures,
                        "last_output": health.last_output,
                    })),
                    "cgroup": service.cgroup,
                },
                "environment": service.environment,
            }))
        })
        .collect::<Result<Vec<Value>>>()?;
    let document = json!({
        "config": {
            "path": inspection.path,
            "hash": inspection.hash,
            "state_dir": inspection.state_dir,
            "owner_uid": inspection.owner_uid,
            "environment_shown": inspection.environment_shown,
        },
        "services": services,
    });
    // JSON escapes control characters, so nothing a service wrote reaches
    // the terminal as an escape sequence.
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(ExitCode::SUCCESS)
}
