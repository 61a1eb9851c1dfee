//! Baking the `kepler:` section: global `sys_env`, dependency `timeout`, log
//! defaults and global hooks. Lua blocks here see the system environment and
//! no service.

use std::collections::BTreeMap;

use super::bake::{BakeContext, GlobalDefaults};
use super::decode::{fields, keyword, parsed};
use super::document::{Node, NodeValue};
use super::expand::Scope;
use super::hooks::{hooks, HookBase};
use super::logs::logs;
use super::lua_stage::{context, LazyContext};
use super::metrics::metrics;
use super::service::SYS_ENV_POLICIES;
use super::snapshot::{GlobalHookKind, HookConfig, LogConfig};
use crate::env::{process_environment, EnvMap};

const KEPLER_KEYS: &[&str] = &["sys_env", "timeout", "logs", "hooks", "metrics"];

pub(crate) fn bake_global(
    node: Option<&mut Node>,
    cx: &mut BakeContext<'_>,
) -> (GlobalDefaults, BTreeMap<GlobalHookKind, HookConfig>) {
    let mut defaults = GlobalDefaults {
        sys_env: Default::default(),
        timeout: None,
        logs: LogConfig::default(),
        metrics: Default::default(),
    };
    let Some(node) = node else {
        return (defaults, BTreeMap::new());
    };
    resolve_lua(node, cx);
    if node.value == NodeValue::Null {
        return (defaults, BTreeMap::new());
    }
    let Some(map) = fields(node, "kepler", KEPLER_KEYS, &mut cx.diag) else {
        return (defaults, BTreeMap::new());
    };
    if let Some(node) = map.get("sys_env") {
        defaults.sys_env = keyword(
            node,
            &map.path("sys_env"),
            "sys_env policy",
            &SYS_ENV_POLICIES,
            &mut cx.diag,
        )
        .unwrap_or_default();
    }
    if let Some(node) = map.get("timeout") {
        defaults.timeout = parsed(node, &map.path("timeout"), &mut cx.diag);
    }
    if let Some(node) = map.get("logs") {
        defaults.logs = logs(node, &map.path("logs"), &LogConfig::default(), &mut cx.diag);
    }
    if let Some(node) = map.get("metrics") {
        defaults.metrics = metrics(node, &map.path("metrics"), &mut cx.diag);
    }
    let global_hooks = match map.get("hooks") {
        Some(node) => {
            let empty = EnvMap::new();
            let env = process_environment(defaults.sys_env, cx.sys_env, &empty, &empty);
            let config_dir = cx.config_dir.clone();
            let base = HookBase {
                env: &env,
                scope: Scope::system(cx.sys_env),
                working_dir: &config_dir,
                user: None,
                group: None,
                umask: None,
            };
            let kinds: Vec<_> = GlobalHookKind::ALL.iter().map(|k| (k.name(), *k)).collect();
            hooks(node, &map.path("hooks"), &kinds, &base, cx)
        }
        None => BTreeMap::new(),
    };
    (defaults, global_hooks)
}

/// Lua in `kepler:` runs with the system environment, in file order; a
/// block inside a hook also gets `ctx.hook_name`.
fn resolve_lua(node: &mut Node, cx: &mut BakeContext<'_>) {
    let sys_env = cx.sys_env;
    let none = EnvMap::new();
    let global_ctx = || context(sys_env.clone(), sys_env, &none, None, None);
    cx.lua.resolve_here(
        node,
        "kepler",
        &mut LazyContext::new(&global_ctx),
        &mut cx.diag,
    );
    let NodeValue::Map(entries) = &mut node.value else {
        return;
    };
    for entry in entries.iter_mut() {
        let path = format!("kepler.{}", entry.key);
        if entry.key != "hooks" {
            cx.lua.resolve(
                &mut entry.value,
                &path,
                &mut LazyContext::new(&global_ctx),
                &mut cx.diag,
            );
            continue;
        }
        cx.lua.resolve_here(
            &mut entry.value,
            &path,
            &mut LazyContext::new(&global_ctx),
            &mut cx.diag,
        );
        if let NodeValue::Map(hook_entries) = &mut entry.value.value {
            for hook in hook_entries.iter_mut() {
                let hook_ctx = || context(sys_env.clone(), sys_env, &none, None, Some(&hook.key));
                let hook_path = format!("{path}.{}", hook.key);
                cx.lua.resolve(
                    &mut hook.value,
                    &hook_path,
                    &mut LazyContext::new(&hook_ctx),
                    &mut cx.diag,
                );
            }
        }
    }
}
