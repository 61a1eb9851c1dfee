//! `kepler inspect [SERVICE...]`: the config and each service, baked
//! settings and runtime state, for people and scripts.
//!
//! The environment is shown only to the config's owner and root. Today
//! nobody else can reach a config at all (`loaded_config` refuses them), but
//! the rule is kept here too so that widening access later cannot leak it.

use kepler_protocol::{
    ConfigInspection, ConfigRef, ErrorKind, HealthInspection, Response, ServiceInspection,
};

use super::config_access::loaded_config;
use super::stats::indexes;
use super::RequestContext;
use crate::config::ServiceConfig;
use crate::config_actor::ActorError;
use crate::orchestrator::ServiceObservation;
use crate::process::signal_name;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
) -> Result<Response, ActorError> {
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    let observation = handle.observe().await?;
    let snapshot = handle.config();
    // A service stands for all its instances, an instance for itself.
    let names: Vec<String> = snapshot.services.keys().cloned().collect();
    let instances = |name: &String| observation.services.iter().any(|s| &s.info.name == name);
    let services_asked: Vec<String> = services
        .iter()
        .filter(|name| !instances(name))
        .cloned()
        .collect();
    indexes(&handle, &names, &services_asked)?;
    let environment_shown = ctx.caller.is_root() || ctx.caller.uid == handle.owner_uid();
    let services = observation
        .services
        .iter()
        .filter(|observed| {
            services.is_empty()
                || services
                    .iter()
                    .any(|asked| *asked == observed.info.service || *asked == observed.info.name)
        })
        .filter_map(|observed| {
            let config = snapshot.services.get(&observed.info.service)?;
            Some(inspect_service(config, observed, environment_shown))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Response::Inspect(ConfigInspection {
        path: handle.path().to_path_buf(),
        hash: handle.store().name().to_owned(),
        state_dir: handle.store().root().to_path_buf(),
        owner_uid: handle.owner_uid(),
        environment_shown,
        services,
    }))
}

fn inspect_service(
    config: &ServiceConfig,
    observed: &ServiceObservation,
    environment_shown: bool,
) -> Result<ServiceInspection, ActorError> {
    // The environment travels once, in its own field, and only when shown;
    // hooks carry environments of their own, removed the same way.
    let failed = |e: serde_json::Error| {
        ActorError::new(
            ErrorKind::Failed,
            format!(
                "cannot render the baked config of `{}`: {e}",
                observed.info.name
            ),
        )
    };
    let mut baked = serde_json::to_value(config).map_err(failed)?;
    if let Some(fields) = baked.as_object_mut() {
        fields.remove("environment");
        if let Some(hooks) = fields.get_mut("hooks").and_then(|h| h.as_object_mut()) {
            for hook in hooks.values_mut().filter_map(|h| h.as_object_mut()) {
                hook.remove("environment");
            }
        }
    }
    let config_json = serde_json::to_string(&baked).map_err(failed)?;
    let mut environment = config.environment.clone();
    environment.extend(observed.instance_env.iter().cloned());
    let info = &observed.info;
    Ok(ServiceInspection {
        name: info.name.clone(),
        config_json,
        status: info.status.name(),
        pid: info.pid,
        started_at_ms: observed.started_at_ms,
        exit_code: observed.exit_code,
        exit_signal: observed.exit_signal.map(signal_name),
        restarts: info.restarts,
        reason: info.reason.clone(),
        health: observed
            .health
            .as_ref()
            .map(|(status, failures, output)| HealthInspection {
                status: (*status).to_owned(),
                consecutive_failures: *failures,
                last_output: output.clone(),
            }),
        cgroup: observed.cgroup.clone(),
        environment: environment_shown.then_some(environment),
    })
}
