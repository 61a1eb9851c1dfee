//! `kepler export kubernetes`: for each service with an image (given with
//! `--image SERVICE=IMAGE`; never guessed) a Deployment, or a Job when other
//! services wait for it to complete. Ordering becomes init containers that
//! `kubectl wait` for what a service depends on, with a service account
//! allowed to read Deployments and Jobs.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use kepler_protocol::config_view::{ConfigView, HealthcheckView, ProbeView, ServiceView};

use super::{dns_label, is_loopback, replicas, seconds_up, split_host_port, split_http_url, Notes};

pub struct Manifests {
    pub documents: Vec<Value>,
    pub notes: Notes,
}

pub fn export(
    view: &ConfigView,
    stack: &str,
    images: &BTreeMap<String, String>,
    wait_image: &str,
) -> Manifests {
    let mut notes = Notes::default();
    let names: BTreeMap<&str, String> = view
        .services
        .keys()
        .map(|s| (s.as_str(), dns_label(s)))
        .collect();
    let completed: Vec<&str> = view
        .services
        .values()
        .flat_map(|s| s.depends_on.iter())
        .filter(|(_, edge)| edge.condition == "service_completed_successfully")
        .map(|(target, _)| target.as_str())
        .collect();
    let waiter = format!("{stack}-waiter");
    let mut documents = Vec::new();
    let mut any_waits = false;
    for (name, service) in &view.services {
        let Some(image) = images.get(name) else {
            notes.entry(name, "not exported: no --image given for it");
            continue;
        };
        let k8s_name = &names[name.as_str()];
        let is_job = completed.contains(&name.as_str());
        let mut pod = pod_spec(name, k8s_name, service, image, is_job, &mut notes);
        let inits = init_containers(
            name, service, view, images, &names, &completed, wait_image, &mut notes,
        );
        if !inits.is_empty() {
            any_waits = true;
            pod.insert("serviceAccountName".into(), json!(waiter));
            pod.insert("initContainers".into(), Value::Array(inits));
        }
        let labels = json!({
            "app.kubernetes.io/name": k8s_name,
            "app.kubernetes.io/part-of": stack,
            "app.kubernetes.io/managed-by": "kepler-export",
        });
        let template = json!({ "metadata": { "labels": labels }, "spec": Value::Object(pod) });
        let document = if is_job {
            notes.entry(
                name,
                format!("Job `{k8s_name}` (others wait for it to complete)"),
            );
            let mut spec = Map::new();
            spec.insert("template".into(), template);
            if let Some(attempts) = service.restart.max_attempts {
                spec.insert("backoffLimit".into(), json!(attempts));
            }
            if let Some(count) = service.replicas {
                // Every instance runs to completion, all at once.
                spec.insert("completions".into(), json!(count));
                spec.insert("parallelism".into(), json!(count));
            }
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": { "name": k8s_name, "labels": labels },
                "spec": Value::Object(spec),
            })
        } else {
            notes.entry(name, format!("Deployment `{k8s_name}`"));
            if service.restart.policy != "always" {
                notes.lost(
                    name,
                    format!(
                        "restart {}: a Deployment always restarts its container",
                        service.restart.policy
                    ),
                );
            }
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": k8s_name, "labels": labels },
                "spec": {
                    "replicas": replicas(service),
                    "selector": { "matchLabels": { "app.kubernetes.io/name": k8s_name } },
                    "template": template,
                },
            })
        };
        documents.push(document);
    }
    if any_waits {
        documents.extend(waiter_access(&waiter, stack));
    }
    if !view.global_hooks.is_empty() {
        notes.lost(
            stack,
            format!(
                "global hooks ({}) have no place in the manifests",
                view.global_hooks.join(", ")
            ),
        );
    }
    if view
        .services
        .iter()
        .any(|(name, s)| images.contains_key(name) && !s.environment.is_empty())
    {
        notes.warn("env values are the baked environment, written in the manifests; move secrets into a Secret and reference it with valueFrom");
    }
    Manifests { documents, notes }
}

fn pod_spec(
    name: &str,
    k8s_name: &str,
    service: &ServiceView,
    image: &str,
    is_job: bool,
    notes: &mut Notes,
) -> Map<String, Value> {
    let mut container = Map::new();
    container.insert("name".into(), json!(k8s_name));
    container.insert("image".into(), json!(image));
    container.insert("command".into(), json!(service.command[..1]));
    if service.command.len() > 1 {
        container.insert("args".into(), json!(service.command[1..]));
    }
    container.insert(
        "workingDir".into(),
        json!(service.working_dir.display().to_string()),
    );
    let mut env: Vec<Value> = service
        .environment
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    if let Some(count) = service.replicas {
        // Pods of a Deployment are interchangeable: they have no number.
        env.push(json!({ "name": "KEPLER_REPLICAS", "value": count.to_string() }));
        notes.lost(
            name,
            format!("replicas {count}: pods are interchangeable, so KEPLER_REPLICA is not set (a StatefulSet's pod index could give one)"),
        );
    }
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    let mut security = Map::new();
    if let Some(uid) = service.uid {
        security.insert("runAsUser".into(), json!(uid));
    }
    if let Some(gid) = service.gid {
        security.insert("runAsGroup".into(), json!(gid));
    }
    if service.user.is_some() && service.uid.is_none() {
        notes.lost(
            name,
            format!(
                "user {}: not a user of this machine, so no runAsUser",
                service.user.as_deref().unwrap_or_default()
            ),
        );
    }
    if !security.is_empty() {
        container.insert("securityContext".into(), Value::Object(security));
    }
    let mut limits = serde_json::Map::new();
    if let Some(bytes) = service.limits.memory_bytes {
        limits.insert("memory".into(), json!(quantity(bytes)));
    }
    if let Some(millis) = service.limits.cpu_millis {
        limits.insert("cpu".into(), json!(format!("{millis}m")));
    }
    if !limits.is_empty() {
        container.insert("resources".into(), json!({ "limits": limits }));
    }
    if service.limits.pids.is_some() {
        notes.lost(
            name,
            "limits.pids: Kubernetes limits processes per pod (the kubelet's podPidsLimit), not per container",
        );
    }
    if service.limits.io_weight.is_some() || service.limits.swap_bytes.is_some() {
        notes.lost(
            name,
            "limits.io_weight and limits.swap have no container resource in a pod spec",
        );
    }
    if service.limits.cpu_time_secs.is_some() || service.limits.max_fds.is_some() {
        notes.lost(
            name,
            "limits.cpu_time and limits.max_fds: a pod spec sets no rlimits",
        );
    }
    if let Some(check) = &service.healthcheck {
        let probe = probe(name, check, notes);
        container.insert("readinessProbe".into(), probe.clone());
        container.insert("livenessProbe".into(), probe);
        notes.lost(name, "healthcheck: the liveness probe makes Kubernetes restart the container when it fails, which Kepler does not do");
    }
    if service.stop_signal != "SIGTERM" {
        notes.lost(name, format!("stop_signal {}: Kubernetes stops containers with SIGTERM (or the image's STOPSIGNAL)", service.stop_signal));
    }
    for hook in service.hooks.keys() {
        notes.lost(name, format!("hook {hook}: no place in a pod (lifecycle postStart/preStop hooks behave differently)"));
    }
    if !service.restart.watch.is_empty() {
        notes.lost(
            name,
            "restart.watch: containers are not restarted on file changes",
        );
    }
    let mut pod = Map::new();
    pod.insert("containers".into(), json!([Value::Object(container)]));
    pod.insert(
        "terminationGracePeriodSeconds".into(),
        json!(seconds_up(service.stop_grace_period_ms)),
    );
    if is_job {
        let policy = if service.restart.policy == "no" {
            "Never"
        } else {
            "OnFailure"
        };
        pod.insert("restartPolicy".into(), json!(policy));
    }
    pod
}

/// Bytes as a Kubernetes quantity: `512Mi` where it divides evenly.
fn quantity(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn probe(name: &str, check: &HealthcheckView, notes: &mut Notes) -> Value {
    let mut probe = Map::new();
    match &check.probe {
        ProbeView::Command(argv) => {
            probe.insert("exec".into(), json!({ "command": argv }));
        }
        ProbeView::Http(url) => {
            let (host, port, path) = split_http_url(url);
            let mut get = json!({ "path": path, "port": port });
            if !is_loopback(&host) {
                get["host"] = json!(host);
            }
            probe.insert("httpGet".into(), get);
        }
        ProbeView::Tcp(address) => {
            let (host, port) = split_host_port(address, 0);
            let mut socket = json!({ "port": port });
            if !is_loopback(&host) {
                socket["host"] = json!(host);
            }
            probe.insert("tcpSocket".into(), socket);
        }
    }
    if matches!(check.probe, ProbeView::Http(_) | ProbeView::Tcp(_)) {
        notes.lost(name, "health probe on localhost: the kubelet probes the pod's IP, so the process must listen beyond 127.0.0.1");
    }
    probe.insert(
        "periodSeconds".into(),
        json!(seconds_up(check.interval_ms).max(1)),
    );
    probe.insert(
        "timeoutSeconds".into(),
        json!(seconds_up(check.timeout_ms).max(1)),
    );
    probe.insert("failureThreshold".into(), json!(check.retries.max(1)));
    probe.insert(
        "initialDelaySeconds".into(),
        json!(seconds_up(check.start_period_ms)),
    );
    Value::Object(probe)
}

/// One `kubectl wait` init container per dependency that orders the start.
#[allow(clippy::too_many_arguments)]
fn init_containers(
    name: &str,
    service: &ServiceView,
    view: &ConfigView,
    images: &BTreeMap<String, String>,
    names: &BTreeMap<&str, String>,
    completed: &[&str],
    wait_image: &str,
    notes: &mut Notes,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (target, edge) in &service.depends_on {
        let condition = edge.condition.as_str();
        if !matches!(
            condition,
            "service_started" | "service_healthy" | "service_completed_successfully"
        ) {
            notes.lost(name, format!("depends_on {target} ({condition}): Kubernetes has nothing that waits for a later failure"));
            continue;
        }
        if !images.contains_key(target) || !view.services.contains_key(target) {
            notes.lost(
                name,
                format!("depends_on {target}: {target} is not exported, so nothing waits for it"),
            );
            continue;
        }
        let target_name = &names[target.as_str()];
        let resource = if completed.contains(&target.as_str()) {
            format!("job/{target_name}")
        } else {
            format!("deployment/{target_name}")
        };
        let wait_for = if resource.starts_with("job/") {
            "condition=Complete"
        } else {
            "condition=Available"
        };
        // A negative timeout is kubectl's "wait for a week".
        let timeout = edge
            .timeout_ms
            .map_or_else(|| "-1s".to_owned(), |ms| format!("{}s", seconds_up(ms)));
        out.push(json!({
            "name": format!("wait-for-{target_name}"),
            "image": wait_image,
            "command": ["kubectl", "wait", format!("--for={wait_for}"), format!("--timeout={timeout}"), resource],
        }));
        if edge.restart {
            notes.lost(name, format!("depends_on {target} restart: true: a pod is not restarted when {target} restarts"));
        }
    }
    out
}

/// The account the init containers run as, allowed to read what they wait on.
fn waiter_access(waiter: &str, stack: &str) -> Vec<Value> {
    let labels = json!({ "app.kubernetes.io/part-of": stack, "app.kubernetes.io/managed-by": "kepler-export" });
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": waiter, "labels": labels },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": waiter, "labels": labels },
            "rules": [
                { "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"] },
                { "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"] },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": waiter, "labels": labels },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": waiter },
            "subjects": [{ "kind": "ServiceAccount", "name": waiter }],
        }),
    ]
}

/// The manifests as one multi-document YAML stream.
pub fn render(documents: &[Value], header: &str) -> String {
    let mut out = String::from(header);
    for document in documents {
        out.push_str("---\n");
        // JSON values always serialise as YAML.
        out.push_str(&serde_yaml::to_string(document).expect("a manifest serialises"));
    }
    out
}
