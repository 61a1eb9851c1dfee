//! Decoding lifecycle hooks, of services and of the `kepler:` section.
//!
//! A hook starts from what its owner gives it ([`HookBase`]): the service's
//! final environment, expansion scope, working dir and user (or, for global
//! hooks, the global `sys_env` policy and the config's directory). Its own
//! `env_file` and `environment` go on top, in the same stages as a service.

use std::collections::BTreeMap;
use std::path::Path;

use super::bake::{resolve_path, BakeContext};
use super::decode::{expanded, expanded_parsed, fields, parsed, string_list, text};
use super::document::{Node, NodeValue};
use super::environment::{environment, read_env_file};
use super::expand::Scope;
use super::snapshot::{HookAction, HookConfig};
use super::values::{GroupSpec, Umask, UserSpec};
use crate::env::EnvMap;

const HOOK_KEYS: &[&str] = &[
    "run",
    "command",
    "user",
    "working_dir",
    "environment",
    "env_file",
    "timeout",
];

pub(crate) struct HookBase<'a> {
    pub env: &'a EnvMap,
    pub scope: Scope<'a>,
    pub working_dir: &'a Path,
    pub user: Option<&'a UserSpec>,
    pub group: Option<&'a GroupSpec>,
    pub umask: Option<Umask>,
}

/// Decodes a `hooks:` mapping whose allowed names are `kinds`.
pub(crate) fn hooks<K: Copy + Ord>(
    node: &Node,
    path: &str,
    kinds: &[(&str, K)],
    base: &HookBase<'_>,
    cx: &mut BakeContext<'_>,
) -> BTreeMap<K, HookConfig> {
    let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
    let mut out = BTreeMap::new();
    let Some(map) = fields(node, path, &names, &mut cx.diag) else {
        return out;
    };
    for (name, kind) in kinds {
        if let Some(hook_node) = map.get(name) {
            if let Some(hook) = hook(hook_node, &map.path(name), base, cx) {
                out.insert(*kind, hook);
            }
        }
    }
    out
}

fn hook(
    node: &Node,
    path: &str,
    base: &HookBase<'_>,
    cx: &mut BakeContext<'_>,
) -> Option<HookConfig> {
    let map = fields(node, path, HOOK_KEYS, &mut cx.diag)?;
    let action = match (map.get("run"), map.get("command")) {
        (Some(run), None) => {
            let script = text(run, &map.path("run"), &mut cx.diag)?;
            if script.trim().is_empty() {
                cx.diag.at(
                    run.mark,
                    &map.path("run"),
                    "`run` is empty; give the shell script to run",
                );
                return None;
            }
            HookAction::Run(script.to_owned())
        }
        (None, Some(command)) => HookAction::Command(argv(command, &map.path("command"), cx)?),
        (run, command) => {
            let found = if run.is_some() && command.is_some() {
                "both"
            } else {
                "neither"
            };
            cx.diag.at(
                node.mark,
                path,
                format!("a hook needs exactly one of `run` (a shell script) or `command` (an argv list); found {found}"),
            );
            return None;
        }
    };

    let (env_file, file_vars) =
        read_env_file(map.get("env_file"), &map.path("env_file"), &base.scope, cx);
    let file_scope = base.scope.with(&file_vars);
    let own_env = environment(
        map.get("environment"),
        &map.path("environment"),
        &file_scope,
        &mut cx.diag,
    );
    let scope = file_scope.with(&own_env);

    let user = match map.get("user") {
        Some(node) => Some(expanded_parsed::<UserSpec>(
            node,
            &map.path("user"),
            &scope,
            &mut cx.diag,
        )?),
        None => base.user.cloned(),
    };
    // An own `user` brings its own primary group; otherwise the owner's group.
    let group = if map.get("user").is_some() {
        None
    } else {
        base.group.cloned()
    };
    if map.get("user").is_some() {
        super::service::check_identity(&map, user.as_ref(), None, &mut cx.diag);
    }
    let working_dir = match map.get("working_dir") {
        Some(node) => resolve_path(
            base.working_dir,
            &expanded(node, &map.path("working_dir"), &scope, &mut cx.diag)?,
        ),
        None => base.working_dir.to_owned(),
    };
    let timeout = match map.get("timeout") {
        Some(node) => Some(parsed(node, &map.path("timeout"), &mut cx.diag)?),
        None => None,
    };

    let mut final_env = base.env.clone();
    final_env.extend(file_vars);
    final_env.extend(own_env);
    Some(HookConfig {
        action,
        user,
        group,
        umask: base.umask,
        working_dir,
        env_file,
        environment: final_env,
        timeout,
    })
}

/// A command argv: a non-empty list whose first item names a program.
pub(crate) fn argv(node: &Node, path: &str, cx: &mut BakeContext<'_>) -> Option<Vec<String>> {
    if let NodeValue::Scalar { text, .. } = &node.value {
        cx.diag.at(
            node.mark,
            path,
            format!("expected a list like [\"npm\", \"start\"], found the string `{text}`; to run a shell line write [\"sh\", \"-c\", \"...\"]"),
        );
        return None;
    }
    let argv = string_list(node, path, &mut cx.diag)?;
    match argv.first() {
        None => {
            cx.diag.at(
                node.mark,
                path,
                "the command is empty; give at least the program to run",
            );
            None
        }
        Some(program) if program.trim().is_empty() => {
            cx.diag.at(
                node.mark,
                &format!("{path}[0]"),
                "the program name (the first item) is empty",
            );
            None
        }
        Some(_) => Some(argv),
    }
}
