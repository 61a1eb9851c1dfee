//! `kepler export nomad`: a Nomad job in the JSON form of its HTTP API
//! (`{"Job": {...}}`, the body of `PUT /v1/jobs`), one task group with a
//! task per service on the `raw_exec` driver, which runs native processes
//! as Kepler does. Durations are nanoseconds, as the API counts them.
//!
//! A service with `replicas:` becomes one task per instance (`web.1`,
//! `web.2`, … with `KEPLER_REPLICA` set), not a group `Count`: every task
//! stays in the one group, so prestart ordering still holds for them.

use serde_json::{json, Map, Value};

use kepler_protocol::config_view::{ConfigView, ProbeView, ServiceView};

use super::{instances, is_loopback, program_path, split_host_port, split_http_url, Notes};

const NS_PER_MS: u64 = 1_000_000;

pub fn export(view: &ConfigView, stack: &str) -> (Value, Notes) {
    let mut notes = Notes::default();
    let prestart: Vec<&str> = view
        .services
        .values()
        .flat_map(|s| s.depends_on.iter())
        .filter(|(_, edge)| edge.condition == "service_completed_successfully")
        .map(|(target, _)| target.as_str())
        .collect();
    // Script checks need Consul; Nomad's own service catalogue runs only
    // http and tcp checks.
    let provider = if view.services.values().any(|s| {
        matches!(
            s.healthcheck.as_ref().map(|c| &c.probe),
            Some(ProbeView::Command(_))
        )
    }) {
        "consul"
    } else {
        "nomad"
    };
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for (name, service) in &view.services {
        let is_prestart = prestart.contains(&name.as_str());
        let template = task(name, service, is_prestart, provider, &mut ports, &mut notes);
        let kind = if is_prestart {
            ", prestart: the group's other tasks start after it completes"
        } else {
            ""
        };
        let Some(count) = service.replicas else {
            tasks.push(template);
            notes.entry(name, format!("task `{name}` (raw_exec{kind})"));
            continue;
        };
        for (instance, replica) in instances(name, service) {
            tasks.push(replica_task(&template, &instance, replica, count));
        }
        notes.entry(
            name,
            match count {
                0 => "no task: replicas: 0".to_owned(),
                1 => format!("task `{name}.1` (raw_exec{kind}, KEPLER_REPLICA set)"),
                n => format!(
                    "tasks `{name}.1` … `{name}.{n}` (raw_exec{kind}, one per instance with \
                     KEPLER_REPLICA set; change the count in the config and export again)"
                ),
            },
        );
    }
    if !view.global_hooks.is_empty() {
        notes.lost(
            stack,
            format!(
                "global hooks ({}) have no place in a job",
                view.global_hooks.join(", ")
            ),
        );
    }
    let restarts = view.services.values().any(|s| s.restart.policy != "no");
    let (delay, max_delay) = view
        .services
        .values()
        .filter(|s| s.restart.policy != "no")
        .fold((u64::MAX, 0), |(d, m), s| {
            (d.min(s.restart.delay_ms), m.max(s.restart.max_delay_ms))
        });
    let reschedule = if restarts {
        json!({
            "Unlimited": true,
            "DelayFunction": "exponential",
            "Delay": delay * NS_PER_MS,
            "MaxDelay": max_delay * NS_PER_MS,
        })
    } else {
        json!({ "Attempts": 0, "Unlimited": false })
    };
    let mut group = Map::new();
    group.insert("Name".into(), json!(stack));
    group.insert("Count".into(), json!(1));
    if !ports.is_empty() {
        group.insert("Networks".into(), json!([{ "ReservedPorts": ports }]));
    }
    group.insert("ReschedulePolicy".into(), reschedule);
    group.insert("Tasks".into(), Value::Array(tasks));
    let job = json!({
        "Job": {
            "ID": stack,
            "Name": stack,
            "Type": "service",
            "Datacenters": ["*"],
            "Meta": { "kepler_config": view.config_file.display().to_string() },
            "TaskGroups": [Value::Object(group)],
        }
    });
    (job, notes)
}

/// One instance's task: the service's task renamed, with its number in the
/// environment and its own name in the service catalogue.
fn replica_task(template: &Value, instance: &str, replica: Option<u32>, count: u32) -> Value {
    let mut task = template.clone();
    task["Name"] = json!(instance);
    let mut env = task["Env"].as_object().cloned().unwrap_or_default();
    if let Some(replica) = replica {
        env.insert("KEPLER_REPLICA".into(), json!(replica.to_string()));
    }
    env.insert("KEPLER_REPLICAS".into(), json!(count.to_string()));
    task["Env"] = Value::Object(env);
    let catalogue_name = instance.replace('.', "-");
    let services = task.get_mut("Services").and_then(Value::as_array_mut);
    for service in services.into_iter().flatten() {
        service["Name"] = json!(catalogue_name);
        for check in service["Checks"].as_array_mut().into_iter().flatten() {
            check["Name"] = json!(format!("{catalogue_name}-health"));
        }
    }
    task
}

fn task(
    name: &str,
    service: &ServiceView,
    is_prestart: bool,
    provider: &str,
    ports: &mut Vec<Value>,
    notes: &mut Notes,
) -> Value {
    let program = program_path(service).map_or_else(
        || {
            notes.warn(format!(
                "{name}: `{}` is not found on this machine; the task names it as written",
                service.command[0]
            ));
            service.command[0].clone()
        },
        |p| p.display().to_string(),
    );
    let mut task = Map::new();
    task.insert("Name".into(), json!(name));
    task.insert("Driver".into(), json!("raw_exec"));
    task.insert(
        "Config".into(),
        json!({
            "command": program,
            "args": service.command[1..],
            "work_dir": service.working_dir.display().to_string(),
        }),
    );
    if !service.environment.is_empty() {
        task.insert("Env".into(), json!(service.environment));
    }
    if let Some(user) = &service.user {
        task.insert("User".into(), json!(user.split(':').next().unwrap_or(user)));
    }
    if service.group.is_some() || service.user.as_deref().is_some_and(|u| u.contains(':')) {
        notes.lost(
            name,
            "group: a Nomad task runs with its user's primary group",
        );
    }
    if is_prestart {
        task.insert(
            "Lifecycle".into(),
            json!({ "Hook": "prestart", "Sidecar": false }),
        );
    }
    task.insert("RestartPolicy".into(), restart_policy(service, name, notes));
    let mut resources = serde_json::Map::new();
    if let Some(bytes) = service.limits.memory_bytes {
        resources.insert("MemoryMB".into(), json!(bytes.div_ceil(1 << 20).max(10)));
    }
    match service.limits.cpu_millis {
        // Cores reserves whole CPUs; a fraction has no exact equivalent,
        // since Nomad's CPU resource is in MHz of the client's processors.
        Some(millis) if millis % 1000 == 0 => {
            resources.insert("Cores".into(), json!(millis / 1000));
        }
        Some(_) => notes.lost(
            name,
            "limits.cpus with a fraction: Nomad reserves CPU in MHz or whole cores; set Resources.CPU by hand",
        ),
        None => {}
    }
    if !resources.is_empty() {
        task.insert("Resources".into(), serde_json::Value::Object(resources));
    }
    if service.limits.pids.is_some()
        || service.limits.io_weight.is_some()
        || service.limits.swap_bytes.is_some()
    {
        notes.lost(
            name,
            "limits.pids, limits.io_weight and limits.swap: raw_exec tasks have no such resources",
        );
    }
    if service.limits.cpu_time_secs.is_some() || service.limits.max_fds.is_some() {
        notes.lost(
            name,
            "limits.cpu_time and limits.max_fds: raw_exec sets no rlimits",
        );
    }
    task.insert("KillSignal".into(), json!(service.stop_signal));
    task.insert(
        "KillTimeout".into(),
        json!(service.stop_grace_period_ms * NS_PER_MS),
    );
    if let Some(check) = &service.healthcheck {
        let mut check_json = Map::new();
        check_json.insert("Name".into(), json!(format!("{name}-health")));
        check_json.insert("Interval".into(), json!(check.interval_ms * NS_PER_MS));
        check_json.insert("Timeout".into(), json!(check.timeout_ms * NS_PER_MS));
        let mut service_json = Map::new();
        service_json.insert("Name".into(), json!(name));
        service_json.insert("Provider".into(), json!(provider));
        let mut port = |host: &str, number: u16, notes: &mut Notes| {
            // Instances of one service probe the same address: one port.
            let label = format!("{name}-health");
            if !ports.iter().any(|p| p["Label"] == label) {
                ports.push(json!({ "Label": label, "Value": number }));
            }
            if !is_loopback(host) {
                notes.lost(
                    name,
                    format!("health check host `{host}`: Nomad checks the task's own address"),
                );
            }
            label
        };
        match &check.probe {
            ProbeView::Command(argv) => {
                check_json.insert("Type".into(), json!("script"));
                check_json.insert("Command".into(), json!(argv[0]));
                check_json.insert("Args".into(), json!(argv[1..]));
            }
            ProbeView::Http(url) => {
                let (host, number, path) = split_http_url(url);
                let label = port(&host, number, notes);
                check_json.insert("Type".into(), json!("http"));
                check_json.insert("Path".into(), json!(path));
                check_json.insert("PortLabel".into(), json!(label));
                service_json.insert("PortLabel".into(), json!(label));
            }
            ProbeView::Tcp(address) => {
                let (host, number) = split_host_port(address, 0);
                let label = port(&host, number, notes);
                check_json.insert("Type".into(), json!("tcp"));
                check_json.insert("PortLabel".into(), json!(label));
                service_json.insert("PortLabel".into(), json!(label));
            }
        }
        if provider == "consul" {
            check_json.insert("FailuresBeforeCritical".into(), json!(check.retries));
        } else if check.retries > 1 {
            notes.lost(
                name,
                format!(
                    "healthcheck retries {}: Nomad's own checks turn critical on the first failure",
                    check.retries
                ),
            );
        }
        if check.start_period_ms > 0 {
            notes.lost(
                name,
                "healthcheck start_period: Nomad checks from the start",
            );
        }
        service_json.insert("Checks".into(), json!([Value::Object(check_json)]));
        task.insert("Services".into(), json!([Value::Object(service_json)]));
    }
    for (target, edge) in &service.depends_on {
        match edge.condition.as_str() {
            "service_completed_successfully" => {}
            other => notes.lost(name, format!("depends_on {target} ({other}): tasks of a group start together; only prestart tasks (service_completed_successfully) come first")),
        }
    }
    for hook in service.hooks.keys() {
        notes.lost(name, format!("hook {hook}: a job has no per-task hooks (a prestart or poststop task could run it)"));
    }
    if !service.restart.watch.is_empty() {
        notes.lost(
            name,
            "restart.watch: Nomad does not restart on file changes",
        );
    }
    Value::Object(task)
}

/// Kepler's policy as a Nomad restart block: `no` never restarts, the
/// others restart after `delay`; `max_attempts` bounds the attempts, else
/// Nomad keeps trying (mode `delay`).
fn restart_policy(service: &ServiceView, name: &str, notes: &mut Notes) -> Value {
    let restart = &service.restart;
    if restart.policy == "no" {
        return json!({ "Attempts": 0, "Mode": "fail" });
    }
    if restart.policy == "on-failure" {
        notes.lost(
            name,
            "restart on-failure: a Nomad service task is restarted after any exit",
        );
    }
    if restart.max_delay_ms > restart.delay_ms {
        notes.lost(
            name,
            "restart backoff: Nomad waits the same Delay before each restart within an Interval",
        );
    }
    match restart.max_attempts {
        Some(attempts) => json!({
            "Attempts": attempts,
            "Interval": 24 * 3600 * 1000 * NS_PER_MS,
            "Delay": restart.delay_ms * NS_PER_MS,
            "Mode": "fail",
        }),
        None => json!({
            "Attempts": 10,
            "Interval": 5 * 60 * 1000 * NS_PER_MS,
            "Delay": restart.delay_ms * NS_PER_MS,
            "Mode": "delay",
        }),
    }
}
