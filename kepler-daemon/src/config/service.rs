//! Baking one `services.<name>` entry: its Lua blocks and expansion stages in
//! the spec's order, then every field decoded and defaulted.

use super::bake::{resolve_path, BakeContext, GlobalDefaults};
use super::decode::{
    boolean, expanded, expanded_parsed, fields, keyword, parsed, plain, whole_number, Fields,
};
use super::dependency::{depends_on, DependencyRef};
use super::document::{Mark, Node, NodeValue};
use super::environment::{environment, read_env_file};
use super::error::Diagnostics;
use super::expand::Scope;
use super::healthcheck::healthcheck;
use super::hooks::{argv, hooks, HookBase};
use super::logs::logs;
use super::lua_stage::{context, LazyContext};
use super::snapshot::{
    Limits, RestartConfig, RestartPolicy, ServiceConfig, ServiceHookKind, DEFAULT_STOP_GRACE_PERIOD,
};
use super::values::{ByteSize, CpuCount, GroupSpec, StopSignal, Umask, UserSpec, MAX_REPLICAS};
use crate::env::{process_environment, EnvMap, SysEnvPolicy};

const SERVICE_KEYS: &[&str] = &[
    "command",
    "working_dir",
    "depends_on",
    "environment",
    "env_file",
    "sys_env",
    "restart",
    "healthcheck",
    "hooks",
    "user",
    "group",
    "logs",
    "limits",
    "umask",
    "stop_signal",
    "stop_grace_period",
    "wait",
    "replicas",
];

const RESTART_KEYS: &[&str] = &["policy", "watch", "delay", "max_delay", "max_attempts"];
const RESTART_POLICIES: [(&str, RestartPolicy); 3] = [
    ("no", RestartPolicy::No),
    ("always", RestartPolicy::Always),
    ("on-failure", RestartPolicy::OnFailure),
];
pub(crate) const SYS_ENV_POLICIES: [(&str, SysEnvPolicy); 2] = [
    ("clear", SysEnvPolicy::Clear),
    ("inherit", SysEnvPolicy::Inherit),
];

pub(crate) fn service_hook_kinds() -> Vec<(&'static str, ServiceHookKind)> {
    ServiceHookKind::ALL
        .iter()
        .map(|k| (k.name(), *k))
        .collect()
}

fn entry_mut<'n>(node: &'n mut Node, key: &str) -> Option<&'n mut Node> {
    match &mut node.value {
        NodeValue::Map(entries) => entries
            .iter_mut()
            .find(|e| e.key == key)
            .map(|e| &mut e.value),
        _ => None,
    }
}

fn entry<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        NodeValue::Map(entries) => entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
            .filter(|v| v.value != NodeValue::Null),
        _ => None,
    }
}

/// Bakes the service `name` written at `key_mark`. Returns `None` when it
/// cannot be read at all; other errors are recorded and defaults used, so
/// the whole-config checks still run.
pub(crate) fn bake_service(
    name: &str,
    key_mark: Mark,
    node: &mut Node,
    global: &GlobalDefaults,
    cx: &mut BakeContext<'_>,
    refs: &mut Vec<DependencyRef>,
) -> Option<ServiceConfig> {
    let path = format!("services.{name}");
    let sys_env = cx.sys_env;
    let none = EnvMap::new();

    // Stage 1: a tag on the service itself, then `env_file`, see the system env.
    let sys_ctx = || context(sys_env.clone(), sys_env, &none, Some(name), None);
    cx.lua
        .resolve_here(node, &path, &mut LazyContext::new(&sys_ctx), &mut cx.diag);
    if let Some(env_file_node) = entry_mut(node, "env_file") {
        cx.lua.resolve(
            env_file_node,
            &format!("{path}.env_file"),
            &mut LazyContext::new(&sys_ctx),
            &mut cx.diag,
        );
    }
    let sys_scope = Scope::system(sys_env);
    let (env_file, file_vars) = read_env_file(
        entry(node, "env_file"),
        &format!("{path}.env_file"),
        &sys_scope,
        cx,
    );

    // Stage 2: `environment` sees the system env and the env file.
    let file_ctx = || {
        let mut env = sys_env.clone();
        env.extend(file_vars.clone());
        context(env, sys_env, &file_vars, Some(name), None)
    };
    if let Some(env_node) = entry_mut(node, "environment") {
        cx.lua.resolve(
            env_node,
            &format!("{path}.environment"),
            &mut LazyContext::new(&file_ctx),
            &mut cx.diag,
        );
    }
    let file_scope = sys_scope.with(&file_vars);
    let own_env = environment(
        entry(node, "environment"),
        &format!("{path}.environment"),
        &file_scope,
        &mut cx.diag,
    );

    // Stage 3: everything else sees system env + env file + environment.
    resolve_remaining_lua(name, &path, node, &file_vars, &own_env, cx);
    if cx.lua.failed() {
        return None;
    }
    let scope = file_scope.with(&own_env);
    let map = fields(node, &path, SERVICE_KEYS, &mut cx.diag)?;

    let sys_env_policy = map
        .get("sys_env")
        .and_then(|n| {
            keyword(
                n,
                &map.path("sys_env"),
                "sys_env policy",
                &SYS_ENV_POLICIES,
                &mut cx.diag,
            )
        })
        .unwrap_or(global.sys_env);
    let final_env = process_environment(sys_env_policy, sys_env, &file_vars, &own_env);

    let command = match map.get("command") {
        Some(node) => argv(node, &map.path("command"), cx).unwrap_or_default(),
        None => {
            cx.diag.at(
                key_mark,
                &map.path("command"),
                "`command` is required: the program and its arguments, like [\"npm\", \"start\"]",
            );
            Vec::new()
        }
    };
    let working_dir = map
        .get("working_dir")
        .and_then(|n| expanded(n, &map.path("working_dir"), &scope, &mut cx.diag))
        .map_or_else(
            || cx.config_dir.clone(),
            |dir| resolve_path(&cx.config_dir, &dir),
        );
    let user: Option<UserSpec> = map
        .get("user")
        .and_then(|n| expanded_parsed(n, &map.path("user"), &scope, &mut cx.diag));
    let group: Option<GroupSpec> = map
        .get("group")
        .and_then(|n| expanded_parsed(n, &map.path("group"), &scope, &mut cx.diag));
    check_identity(&map, user.as_ref(), group.as_ref(), &mut cx.diag);
    let depends_on = map
        .get("depends_on")
        .map(|n| {
            depends_on(
                name,
                n,
                &map.path("depends_on"),
                global.timeout,
                &mut cx.diag,
                refs,
            )
        })
        .unwrap_or_default();
    let restart = map
        .get("restart")
        .map(|n| restart(n, &map.path("restart"), &scope, cx))
        .unwrap_or_default();
    let healthcheck = map
        .get("healthcheck")
        .and_then(|n| healthcheck(n, &map.path("healthcheck"), &mut cx.diag));
    let logs = map.get("logs").map_or_else(
        || global.logs.clone(),
        |n| logs(n, &map.path("logs"), &global.logs, &mut cx.diag),
    );
    let limits = limits(&map, &scope, cx);
    let umask: Option<Umask> = map
        .get("umask")
        .and_then(|n| parsed(n, &map.path("umask"), &mut cx.diag));
    let stop_signal: StopSignal = map
        .get("stop_signal")
        .and_then(|n| parsed(n, &map.path("stop_signal"), &mut cx.diag))
        .unwrap_or_default();
    let stop_grace_period = map
        .get("stop_grace_period")
        .and_then(|n| parsed(n, &map.path("stop_grace_period"), &mut cx.diag))
        .unwrap_or(DEFAULT_STOP_GRACE_PERIOD);
    let wait = map
        .get("wait")
        .and_then(|n| boolean(n, &map.path("wait"), &mut cx.diag));
    let replicas = map
        .get("replicas")
        .and_then(|n| replicas(n, &map.path("replicas"), &mut cx.diag));
    let hooks = match map.get("hooks") {
        Some(node) => {
            let base = HookBase {
                env: &final_env,
                scope: scope.clone(),
                working_dir: &working_dir,
                user: user.as_ref(),
                group: group.as_ref(),
                umask,
            };
            hooks(node, &map.path("hooks"), &service_hook_kinds(), &base, cx)
        }
        None => Default::default(),
    };

    Some(ServiceConfig {
        command,
        working_dir,
        depends_on,
        environment: final_env,
        env_file,
        sys_env: sys_env_policy,
        restart,
        healthcheck,
        hooks,
        user,
        group,
        logs,
        limits,
        umask,
        stop_signal,
        stop_grace_period,
        wait,
        replicas,
    })
}

/// `replicas: N`, 0 to [`MAX_REPLICAS`].
fn replicas(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<u32> {
    let count: u32 = whole_number(node, path, diag)?;
    if count > MAX_REPLICAS {
        diag.at(
            node.mark,
            path,
            format!(
                "{count} replicas is more than the {MAX_REPLICAS} a service may run; \
                 use a number from 0 to {MAX_REPLICAS}"
            ),
        );
        return None;
    }
    Some(count)
}

/// Runs the service's remaining Lua blocks in file order with the full
/// service environment; blocks inside a hook also get `ctx.hook_name`.
fn resolve_remaining_lua(
    name: &str,
    path: &str,
    node: &mut Node,
    file_vars: &EnvMap,
    own_env: &EnvMap,
    cx: &mut BakeContext<'_>,
) {
    if !cx.lua.active() {
        return;
    }
    let sys_env = cx.sys_env;
    let full_env = || {
        let mut env = sys_env.clone();
        env.extend(file_vars.clone());
        env.extend(own_env.clone());
        env
    };
    let service_ctx = || context(full_env(), sys_env, file_vars, Some(name), None);
    let NodeValue::Map(entries) = &mut node.value else {
        return;
    };
    for entry in entries.iter_mut() {
        let entry_path = format!("{path}.{}", entry.key);
        match entry.key.as_str() {
            "env_file" | "environment" => {}
            "hooks" => {
                cx.lua.resolve_here(
                    &mut entry.value,
                    &entry_path,
                    &mut LazyContext::new(&service_ctx),
                    &mut cx.diag,
                );
                if let NodeValue::Map(hook_entries) = &mut entry.value.value {
                    for hook in hook_entries.iter_mut() {
                        let hook_ctx =
                            || context(full_env(), sys_env, file_vars, Some(name), Some(&hook.key));
                        let hook_path = format!("{entry_path}.{}", hook.key);
                        cx.lua.resolve(
                            &mut hook.value,
                            &hook_path,
                            &mut LazyContext::new(&hook_ctx),
                            &mut cx.diag,
                        );
                    }
                }
            }
            _ => cx.lua.resolve(
                &mut entry.value,
                &entry_path,
                &mut LazyContext::new(&service_ctx),
                &mut cx.diag,
            ),
        }
    }
}

fn restart(node: &Node, path: &str, scope: &Scope<'_>, cx: &mut BakeContext<'_>) -> RestartConfig {
    let mut config = RestartConfig::default();
    if let NodeValue::Scalar { .. } = node.value {
        if let Some(policy) = keyword(
            node,
            path,
            "restart policy",
            &RESTART_POLICIES,
            &mut cx.diag,
        ) {
            config.policy = policy;
        }
        return config;
    }
    let Some(map) = fields(node, path, RESTART_KEYS, &mut cx.diag) else {
        return config;
    };
    if let Some(node) = map.get("policy") {
        config.policy = keyword(
            node,
            &map.path("policy"),
            "restart policy",
            &RESTART_POLICIES,
            &mut cx.diag,
        )
        .unwrap_or(config.policy);
    }
    if let Some(node) = map.get("watch") {
        config.watch = watch_patterns(node, &map.path("watch"), scope, cx);
        if config.policy == RestartPolicy::No && !config.watch.is_empty() {
            cx.diag.at(
                node.mark,
                &map.path("watch"),
                "`watch` restarts the service on file changes, which `policy: no` forbids; set `policy` to always or on-failure",
            );
        }
    }
    if let Some(node) = map.get("delay") {
        config.delay = parsed(node, &map.path("delay"), &mut cx.diag).unwrap_or(config.delay);
    }
    if let Some(node) = map.get("max_delay") {
        config.max_delay =
            parsed(node, &map.path("max_delay"), &mut cx.diag).unwrap_or(config.max_delay);
    }
    if config.delay > config.max_delay {
        let mark = map
            .get("delay")
            .or(map.get("max_delay"))
            .map_or(map.mark, |n| n.mark);
        cx.diag.at(
            mark,
            &map.path("delay"),
            format!(
                "`delay` {} is longer than `max_delay` {}; backoff grows from delay up to max_delay",
                config.delay, config.max_delay
            ),
        );
    }
    if let Some(node) = map.get("max_attempts") {
        config.max_attempts = whole_number(node, &map.path("max_attempts"), &mut cx.diag);
    }
    config
}

fn watch_patterns(
    node: &Node,
    path: &str,
    scope: &Scope<'_>,
    cx: &mut BakeContext<'_>,
) -> Vec<String> {
    let NodeValue::Seq(items) = &node.value else {
        cx.diag.at(
            node.mark,
            path,
            format!(
                "expected a list of glob patterns like [\"src/**/*.ts\"], found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let mut patterns = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let Some(pattern) = expanded(item, &item_path, scope, &mut cx.diag) else {
            continue;
        };
        match globset::Glob::new(&pattern) {
            Ok(_) => patterns.push(pattern),
            Err(err) => cx.diag.at(
                item.mark,
                &item_path,
                format!("`{pattern}` is not a glob pattern: {}", err.kind()),
            ),
        }
    }
    patterns
}

fn limits(service: &Fields<'_>, scope: &Scope<'_>, cx: &mut BakeContext<'_>) -> Limits {
    let mut limits = Limits::default();
    let Some(node) = service.get("limits") else {
        return limits;
    };
    let Some(map) = fields(
        node,
        &service.path("limits"),
        &[
            "memory",
            "swap",
            "cpus",
            "pids",
            "io_weight",
            "cpu_time",
            "max_fds",
        ],
        &mut cx.diag,
    ) else {
        return limits;
    };
    limits.memory = map
        .get("memory")
        .and_then(|n| expanded_parsed::<ByteSize>(n, &map.path("memory"), scope, &mut cx.diag));
    limits.cpu_time = map
        .get("cpu_time")
        .and_then(|n| whole_number(n, &map.path("cpu_time"), &mut cx.diag));
    limits.max_fds = map
        .get("max_fds")
        .and_then(|n| whole_number(n, &map.path("max_fds"), &mut cx.diag));
    limits.swap = map
        .get("swap")
        .and_then(|n| expanded_parsed::<ByteSize>(n, &map.path("swap"), scope, &mut cx.diag));
    limits.cpus = map
        .get("cpus")
        .and_then(|n| expanded_parsed::<CpuCount>(n, &map.path("cpus"), scope, &mut cx.diag));
    limits.pids = map.get("pids").and_then(|n| {
        let what = "the most processes and threads the service may have at once";
        number_in(
            n,
            &map.path("pids"),
            1..=u32::MAX as u64,
            what,
            &mut cx.diag,
        )
    });
    limits.io_weight = map.get("io_weight").and_then(|n| {
        let what = "its share of disk time against other services; 100 is the default";
        number_in(n, &map.path("io_weight"), 1..=10_000, what, &mut cx.diag).map(|w| w as u16)
    });
    limits
}

/// A whole number within `range`, else an error saying the range and what
/// the number means.
fn number_in(
    node: &Node,
    path: &str,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
    diag: &mut Diagnostics,
) -> Option<u64> {
    let value = plain(node).and_then(|text| text.trim().parse::<u64>().ok());
    match value {
        Some(number) if range.contains(&number) => Some(number),
        _ => {
            diag.at(
                node.mark,
                path,
                format!(
                    "expected a whole number from {} to {} ({what}), found {}",
                    range.start(),
                    range.end(),
                    node.describe()
                ),
            );
            None
        }
    }
}

/// The service's name check, reported at its key.
pub(crate) fn check_service_name(name: &str, mark: Mark, cx: &mut BakeContext<'_>) -> bool {
    if super::values::is_valid_service_name(name) {
        return true;
    }
    cx.diag.at(
        mark,
        &format!("services.{name}"),
        format!(
            "`{name}` is not a valid service name; names become log file names, so use {}",
            super::values::SERVICE_NAME_RULE
        ),
    );
    false
}

/// Unknown users and groups are config errors, reported at the field, rather
/// than a failure when the service is spawned. Names are looked up in the
/// system's user database (the bake runs with the caller's rights).
pub(crate) fn check_identity(
    map: &Fields<'_>,
    user: Option<&UserSpec>,
    group: Option<&GroupSpec>,
    diag: &mut Diagnostics,
) {
    if user.is_none() && group.is_none() {
        return;
    }
    let user_text = user.map_or_else(|| "0".to_owned(), |u| u.to_string());
    let group_text = group.map(|g| g.to_string());
    if let Err(e) = crate::user::resolve_user(&user_text, group_text.as_deref()) {
        let field = if user.is_some() { "user" } else { "group" };
        if let Some(node) = map.get(field) {
            diag.at(node.mark, &map.path(field), e.to_string());
        }
    }
}
