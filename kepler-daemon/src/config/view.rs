//! The baked config as [`ConfigView`], the JSON `kepler export` reads (see
//! `kepler_protocol::config_view`): durations in milliseconds, signals by
//! name, users resolved to ids where this machine knows them.

use kepler_protocol::config_view::{
    ConfigView, DependencyView, HealthcheckView, HookView, LimitsView, ProbeView, RestartView,
    ServiceView, CONFIG_VIEW_VERSION,
};

use super::snapshot::{BakedConfig, HealthProbe, HookAction, HookConfig, ServiceConfig};
use super::values::HumanDuration;

pub fn config_view(config: &BakedConfig) -> ConfigView {
    ConfigView {
        version: CONFIG_VIEW_VERSION,
        config_file: config.config_file.clone(),
        services: config
            .services
            .iter()
            .map(|(name, service)| (name.clone(), service_view(service)))
            .collect(),
        global_hooks: config
            .kepler
            .hooks
            .keys()
            .map(|kind| kind.name().to_owned())
            .collect(),
    }
}

fn ms(duration: HumanDuration) -> u64 {
    u64::try_from(duration.as_duration().as_millis()).unwrap_or(u64::MAX)
}

fn service_view(service: &ServiceConfig) -> ServiceView {
    let user = service.user.as_ref().map(ToString::to_string);
    let group = service.group.as_ref().map(ToString::to_string);
    let resolved = user
        .as_deref()
        .or(group.as_ref().map(|_| "0"))
        .and_then(|u| crate::user::resolve_user(u, group.as_deref()).ok());
    ServiceView {
        command: service.command.clone(),
        working_dir: service.working_dir.clone(),
        environment: service.environment.clone(),
        user,
        group,
        uid: resolved.as_ref().map(|r| r.uid),
        gid: resolved.as_ref().map(|r| r.gid),
        depends_on: service
            .depends_on
            .iter()
            .map(|(name, edge)| {
                (
                    name.clone(),
                    DependencyView {
                        condition: edge.condition.name().to_owned(),
                        timeout_ms: edge.timeout.map(ms),
                        restart: edge.restart,
                        wait: edge.wait,
                    },
                )
            })
            .collect(),
        restart: RestartView {
            policy: match service.restart.policy {
                super::RestartPolicy::No => "no",
                super::RestartPolicy::Always => "always",
                super::RestartPolicy::OnFailure => "on-failure",
            }
            .to_owned(),
            watch: service.restart.watch.clone(),
            delay_ms: ms(service.restart.delay),
            max_delay_ms: ms(service.restart.max_delay),
            max_attempts: service.restart.max_attempts,
        },
        healthcheck: service.healthcheck.as_ref().map(|check| HealthcheckView {
            probe: match &check.probe {
                HealthProbe::Test(argv) => ProbeView::Command(argv.clone()),
                HealthProbe::Http(url) => ProbeView::Http(url.clone()),
                HealthProbe::Tcp(address) => ProbeView::Tcp(address.clone()),
            },
            interval_ms: ms(check.interval),
            timeout_ms: ms(check.timeout),
            retries: check.retries,
            start_period_ms: ms(check.start_period),
        }),
        hooks: service
            .hooks
            .iter()
            .map(|(kind, hook)| (kind.name().to_owned(), hook_view(hook)))
            .collect(),
        limits: LimitsView {
            memory_bytes: service.limits.memory.map(|m| m.bytes()),
            swap_bytes: service.limits.swap.map(|s| s.0),
            cpu_millis: service.limits.cpus.map(|c| c.millis()),
            pids: service.limits.pids,
            io_weight: service.limits.io_weight,
            cpu_time_secs: service.limits.cpu_time,
            max_fds: service.limits.max_fds,
        },
        stop_signal: service.stop_signal.to_string(),
        stop_grace_period_ms: ms(service.stop_grace_period),
        replicas: service.replicas,
    }
}

fn hook_view(hook: &HookConfig) -> HookView {
    HookView {
        command: match &hook.action {
            HookAction::Run(script) => vec!["sh".to_owned(), "-c".to_owned(), script.clone()],
            HookAction::Command(argv) => argv.clone(),
        },
        user: hook.user.as_ref().map(ToString::to_string),
        group: hook.group.as_ref().map(ToString::to_string),
        working_dir: hook.working_dir.clone(),
        environment: hook.environment.clone(),
        timeout_ms: hook.timeout.map(ms),
    }
}
