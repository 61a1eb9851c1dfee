//! The structure of Nomad's job API, as the export test checks a job
//! against it: the fields of the structs in Nomad's api package
//! (api/jobs.go, api/tasks.go, api/services.go, api/resources.go) and the
//! raw_exec driver's task config, with the JSON type of each field the
//! exporter fills. There is no Nomad binary here to submit the job to.

use serde_json::Value;

/// The structure of Nomad's job API (api/jobs.go, api/tasks.go,
/// api/services.go, api/resources.go and the raw_exec driver's config).
#[derive(Clone)]
pub enum Shape {
    Str,
    Int,
    Bool,
    StrList,
    StrMap,
    /// A field the API has that the exporter does not fill.
    Other,
    Obj(Vec<(&'static str, Shape)>),
    List(Box<Shape>),
}

use Shape::*;

fn others(names: &[&'static str]) -> Vec<(&'static str, Shape)> {
    names.iter().map(|n| (*n, Other)).collect()
}

fn with(mut fields: Vec<(&'static str, Shape)>, more: &[&'static str]) -> Shape {
    fields.extend(others(more));
    Obj(fields)
}

pub fn nomad_job_shape() -> Shape {
    let restart = with(
        vec![
            ("Interval", Int),
            ("Attempts", Int),
            ("Delay", Int),
            ("Mode", Str),
            ("RenderTemplates", Bool),
        ],
        &[],
    );
    let reschedule = with(
        vec![
            ("Attempts", Int),
            ("Interval", Int),
            ("Delay", Int),
            ("DelayFunction", Str),
            ("MaxDelay", Int),
            ("Unlimited", Bool),
        ],
        &[],
    );
    let port = with(
        vec![
            ("Label", Str),
            ("Value", Int),
            ("To", Int),
            ("HostNetwork", Str),
            ("IgnoreCollision", Bool),
        ],
        &[],
    );
    let network = with(
        vec![
            ("ReservedPorts", List(Box::new(port.clone()))),
            ("DynamicPorts", List(Box::new(port))),
            ("Mode", Str),
        ],
        &["Device", "CIDR", "IP", "DNS", "Hostname", "MBits", "CNI"],
    );
    let check = with(
        vec![
            ("Name", Str),
            ("Type", Str),
            ("Command", Str),
            ("Args", StrList),
            ("Path", Str),
            ("PortLabel", Str),
            ("Interval", Int),
            ("Timeout", Int),
            ("FailuresBeforeCritical", Int),
            ("SuccessBeforePassing", Int),
        ],
        &[
            "Protocol",
            "Expose",
            "AddressMode",
            "Advertise",
            "InitialStatus",
            "Notes",
            "TLSServerName",
            "TLSSkipVerify",
            "Header",
            "Method",
            "CheckRestart",
            "GRPCService",
            "GRPCUseTLS",
            "TaskName",
            "FailuresBeforeWarning",
            "Body",
            "OnUpdate",
        ],
    );
    let service = with(
        vec![
            ("Name", Str),
            ("PortLabel", Str),
            ("Provider", Str),
            ("Checks", List(Box::new(check))),
        ],
        &[
            "Tags",
            "CanaryTags",
            "EnableTagOverride",
            "AddressMode",
            "Address",
            "CheckRestart",
            "Connect",
            "Meta",
            "CanaryMeta",
            "TaggedAddresses",
            "TaskName",
            "OnUpdate",
            "Identity",
            "Weights",
            "Cluster",
            "Kind",
        ],
    );
    let resources = with(
        vec![
            ("CPU", Int),
            ("Cores", Int),
            ("MemoryMB", Int),
            ("MemoryMaxMB", Int),
            ("DiskMB", Int),
        ],
        &["Networks", "Devices", "NUMA", "SecretsMB", "IOPS"],
    );
    let raw_exec = with(
        vec![
            ("command", Str),
            ("args", StrList),
            ("work_dir", Str),
            ("oom_score_adj", Int),
        ],
        &["cgroup_v2_override", "cgroup_v1_override", "denied_envvars"],
    );
    let task = with(
        vec![
            ("Name", Str),
            ("Driver", Str),
            ("User", Str),
            (
                "Lifecycle",
                with(vec![("Hook", Str), ("Sidecar", Bool)], &[]),
            ),
            ("Config", raw_exec),
            ("Env", StrMap),
            ("Services", List(Box::new(service.clone()))),
            ("Resources", resources),
            ("RestartPolicy", restart.clone()),
            ("Meta", StrMap),
            ("KillTimeout", Int),
            ("Leader", Bool),
            ("ShutdownDelay", Int),
            ("KillSignal", Str),
        ],
        &[
            "Constraints",
            "Affinities",
            "LogConfig",
            "Artifacts",
            "Vault",
            "Consul",
            "Templates",
            "DispatchPayload",
            "VolumeMounts",
            "CSIPluginConfig",
            "Kind",
            "ScalingPolicies",
            "Secrets",
            "Identity",
            "Identities",
            "Actions",
            "Schedule",
        ],
    );
    let group = with(
        vec![
            ("Name", Str),
            ("Count", Int),
            ("Tasks", List(Box::new(task))),
            ("RestartPolicy", restart),
            ("ReschedulePolicy", reschedule.clone()),
            ("Networks", List(Box::new(network))),
            ("Meta", StrMap),
            ("Services", List(Box::new(service))),
            ("ShutdownDelay", Int),
            ("MaxRunDuration", Int),
        ],
        &[
            "Constraints",
            "Affinities",
            "Spreads",
            "Volumes",
            "Disconnect",
            "EphemeralDisk",
            "Update",
            "Migrate",
            "StopAfterClientDisconnect",
            "MaxClientDisconnect",
            "Scaling",
            "Consul",
            "PreventRescheduleOnLost",
        ],
    );
    let job = with(
        vec![
            ("Region", Str),
            ("Namespace", Str),
            ("ID", Str),
            ("Name", Str),
            ("Type", Str),
            ("Priority", Int),
            ("AllAtOnce", Bool),
            ("Datacenters", StrList),
            ("NodePool", Str),
            ("TaskGroups", List(Box::new(group))),
            ("Reschedule", reschedule),
            ("Meta", StrMap),
        ],
        &[
            "Constraints",
            "Affinities",
            "Update",
            "Multiregion",
            "Spreads",
            "Periodic",
            "ParameterizedJob",
            "Migrate",
            "UI",
        ],
    );
    Obj(vec![("Job", job)])
}

/// Every key is a field of the API struct, with a value of its type.
pub fn check_shape(value: &Value, shape: &Shape, path: &str, problems: &mut Vec<String>) {
    let ok = match (shape, value) {
        (Str, Value::String(_)) | (Bool, Value::Bool(_)) | (Other, _) => true,
        (Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (StrList, Value::Array(items)) => items.iter().all(Value::is_string),
        (StrMap, Value::Object(map)) => map.values().all(Value::is_string),
        (List(item), Value::Array(items)) => {
            for (index, element) in items.iter().enumerate() {
                check_shape(element, item, &format!("{path}[{index}]"), problems);
            }
            true
        }
        (Obj(fields), Value::Object(map)) => {
            for (key, element) in map {
                match fields.iter().find(|(name, _)| name == key) {
                    Some((_, field)) => {
                        check_shape(element, field, &format!("{path}.{key}"), problems)
                    }
                    None => problems.push(format!("{path}.{key} is not a field of the API")),
                }
            }
            true
        }
        _ => false,
    };
    if !ok {
        problems.push(format!("{path} has the wrong type: {value}"));
    }
}
