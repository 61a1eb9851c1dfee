//! `bake`: from a config file and the captured system environment to the
//! immutable [`BakedConfig`], or every error found in the file.
//!
//! Order: parse the document; start Lua if the config uses it; bake the
//! `kepler:` section; bake each service (its Lua and expansion stages are in
//! `service.rs`); then the whole-config checks of `validate.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::decode::{fields_checked, text};
use super::dependency::DependencyRef;
use super::document::{self, Node, NodeValue};
use super::error::{ConfigErrors, Diagnostics};
use super::global::bake_global;
use super::lua_stage::{context, LazyContext, LuaStage};
use super::service::{bake_service, check_service_name};
use super::snapshot::{BakedConfig, GlobalConfig, LogConfig};
use super::snapshot_check::MAX_INSTANCES;
use super::validate::{check_dependencies, check_instance_clash};
use super::values::HumanDuration;
use crate::env::{EnvMap, SysEnvPolicy};

/// A bake's result: the snapshot plus what the state directory keeps.
#[derive(Debug, Clone)]
pub struct Baked {
    pub config: BakedConfig,
    /// The config file's text as read, for the state directory's copy.
    pub source_text: String,
    /// Every env file read, once each.
    pub env_files: Vec<EnvFileCopy>,
}

/// An env file as it was read at bake time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileCopy {
    /// Absolute.
    pub path: PathBuf,
    pub contents: String,
}

/// The `kepler:` values services inherit.
pub(crate) struct GlobalDefaults {
    pub sys_env: SysEnvPolicy,
    pub timeout: Option<HumanDuration>,
    pub logs: LogConfig,
    pub metrics: super::metrics::MetricsConfig,
}

pub(crate) struct BakeContext<'a> {
    pub sys_env: &'a EnvMap,
    /// Absolute directory of the config file: the base of relative paths.
    pub config_dir: PathBuf,
    pub diag: Diagnostics,
    pub env_files: Vec<EnvFileCopy>,
    pub lua: LuaStage,
}

const ROOT_KEYS: &[&str] = &["kepler", "lua", "services"];

/// Largest config file read; a real one is a few KiB.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads, validates and bakes `config_file`. `sys_env` is the environment
/// the CLI captured; the daemon's own environment is never used.
pub fn bake(config_file: &Path, sys_env: &BTreeMap<String, String>) -> Result<Baked, ConfigErrors> {
    let source_text =
        read_source(config_file).map_err(|err| Diagnostics::new(config_file).file_error(err))?;
    bake_source(config_file, source_text, sys_env)
}

/// The config file's text: a regular file (opened without blocking, so a
/// FIFO cannot hang the bake) of at most [`MAX_CONFIG_FILE`] bytes, and, when
/// baking with root's rights, writable only by root.
fn read_source(config_file: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(config_file)
        .map_err(|err| format!("cannot read the config file: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read the config file: {err}"))?;
    if !meta.is_file() {
        return Err("cannot read the config file: it is not a regular file".to_owned());
    }
    if crate::write_access::reading_as_root() {
        crate::write_access::check_file(config_file, &meta)
            .map_err(|verdict| format!("refused: {verdict}"))?;
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read the config file: {err}"))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE {
        return Err(format!(
            "the config file is larger than {} KiB; split it or move data into env files",
            MAX_CONFIG_FILE / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| "the config file is not valid UTF-8".to_owned())
}

/// Bakes `source_text` as if read from `config_file` (whose directory
/// anchors relative paths).
pub fn bake_source(
    config_file: &Path,
    source_text: String,
    sys_env: &BTreeMap<String, String>,
) -> Result<Baked, ConfigErrors> {
    let mut diag = Diagnostics::new(config_file);
    let absolute_file = std::path::absolute(config_file)
        .map_err(|err| diag.file_error(format!("cannot resolve the config file's path: {err}")))?;
    let config_dir = absolute_file.parent().unwrap_or(Path::new("/")).to_owned();

    let doc = document::parse(&source_text).map_err(|problem| {
        let mut diag = Diagnostics::new(config_file);
        diag.at(problem.mark, &problem.path, problem.message);
        diag.into_errors()
    })?;
    for problem in &doc.problems {
        diag.at(problem.mark, &problem.path, problem.message.clone());
    }
    let Some(mut root) = doc.root else {
        return Err(diag.file_error("the config is empty; it needs a `services:` section"));
    };
    let lua_block = check_root(&root, &mut diag)
        .ok_or_else(|| std::mem::replace(&mut diag, Diagnostics::new(config_file)).into_errors())?;

    let lua_code = lua_block
        .as_ref()
        .map(|(code, line)| (code.as_str(), *line));
    let lua = LuaStage::start(&absolute_file, doc.has_tags, doc.has_lua, lua_code, sys_env)
        .map_err(|err| {
            diag.push(err);
            std::mem::replace(&mut diag, Diagnostics::new(config_file)).into_errors()
        })?;
    let mut cx = BakeContext {
        sys_env,
        config_dir,
        diag,
        env_files: Vec::new(),
        lua,
    };

    let (defaults, global_hooks) = bake_global(entry_mut(&mut root, "kepler"), &mut cx);
    let mut services = BTreeMap::new();
    let mut refs: Vec<DependencyRef> = Vec::new();
    let mut declared = BTreeSet::new();
    if let Some(services_node) = entry_mut(&mut root, "services") {
        if let NodeValue::Map(entries) = &services_node.value {
            declared.extend(entries.iter().map(|e| e.key.clone()));
        }
        bake_services(services_node, &defaults, &mut cx, &mut services, &mut refs);
    }
    if !cx.lua.failed() {
        check_dependencies(&declared, &services, &refs, &mut cx.diag);
    }
    if !cx.diag.is_empty() {
        return Err(cx.diag.into_errors());
    }
    Ok(Baked {
        config: BakedConfig {
            config_file: absolute_file,
            kepler: GlobalConfig {
                sys_env: defaults.sys_env,
                timeout: defaults.timeout,
                logs: defaults.logs,
                hooks: global_hooks,
                metrics: defaults.metrics,
            },
            lua: lua_block.map(|(code, _)| code),
            services,
        },
        source_text,
        env_files: cx.env_files,
    })
}

/// Checks the top-level keys and returns the `lua:` block with its first
/// line; `None` when the document cannot be a config at all.
fn check_root(root: &Node, diag: &mut Diagnostics) -> Option<Option<(String, usize)>> {
    let map = fields_checked(root, "", ROOT_KEYS, |key| key.starts_with("x-"), diag)?;
    if map.get("services").is_none() {
        diag.at(
            map.mark,
            "services",
            "`services` is required: a mapping of service name to its settings",
        );
    }
    let lua = map.get("lua").and_then(|node| {
        if node.tag.is_some() {
            diag.at(
                node.mark,
                "lua",
                "the `lua:` block is Lua code itself; remove the tag",
            );
            return None;
        }
        text(node, "lua", diag).map(|code| (code.to_owned(), node.mark.line))
    });
    Some(lua)
}

fn bake_services(
    node: &mut Node,
    defaults: &GlobalDefaults,
    cx: &mut BakeContext<'_>,
    services: &mut BTreeMap<String, super::snapshot::ServiceConfig>,
    refs: &mut Vec<DependencyRef>,
) {
    let sys_env = cx.sys_env;
    let none = EnvMap::new();
    let sys_ctx = || context(sys_env.clone(), sys_env, &none, None, None);
    cx.lua.resolve_here(
        node,
        "services",
        &mut LazyContext::new(&sys_ctx),
        &mut cx.diag,
    );
    let NodeValue::Map(entries) = &mut node.value else {
        cx.diag.at(
            node.mark,
            "services",
            format!(
                "expected a mapping of service name to its settings, found {}",
                node.describe()
            ),
        );
        return;
    };
    if entries.is_empty() {
        cx.diag.at(node.mark, "services", "no services are defined");
    }
    if entries.len() > super::snapshot_check::MAX_SERVICES {
        cx.diag.at(
            node.mark,
            "services",
            format!(
                "{} services, more than the {} a config may have; split it into several configs",
                entries.len(),
                super::snapshot_check::MAX_SERVICES
            ),
        );
        return;
    }
    for entry in entries.iter_mut() {
        if !check_service_name(&entry.key, entry.key_mark, cx) {
            continue;
        }
        if let Some(service) = bake_service(
            &entry.key,
            entry.key_mark,
            &mut entry.value,
            defaults,
            cx,
            refs,
        ) {
            services.insert(entry.key.clone(), service);
        }
        if cx.lua.failed() {
            return;
        }
    }
    let mut instances = 0;
    for entry in entries.iter() {
        check_instance_clash(&entry.key, entry.key_mark, services, &mut cx.diag);
        let Some(service) = services.get(&entry.key) else {
            continue;
        };
        let before = instances;
        instances += u64::from(service.replicas.unwrap_or(1));
        if before <= MAX_INSTANCES && instances > MAX_INSTANCES {
            let replicas = match &entry.value.value {
                NodeValue::Map(fields) => fields.iter().find(|f| f.key == "replicas"),
                _ => None,
            };
            let (mark, path) = match replicas {
                Some(field) => (field.value.mark, format!("services.{}.replicas", entry.key)),
                None => (entry.key_mark, format!("services.{}", entry.key)),
            };
            cx.diag.at(
                mark,
                &path,
                format!(
                    "the config would run more than {MAX_INSTANCES} instances (every replica \
                     counts); run fewer replicas or split the config"
                ),
            );
        }
    }
}

fn entry_mut<'n>(node: &'n mut Node, key: &str) -> Option<&'n mut Node> {
    match &mut node.value {
        NodeValue::Map(entries) => entries
            .iter_mut()
            .find(|e| e.key == key)
            .map(|e| &mut e.value)
            .filter(|v| v.value != NodeValue::Null),
        _ => None,
    }
}

/// `written` made absolute against `base`, with `.` and `..` resolved
/// lexically (the directory may not exist yet at bake time).
pub(crate) fn resolve_path(base: &Path, written: &str) -> PathBuf {
    let joined = base.join(written);
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_lexically_against_the_base() {
        let base = Path::new("/srv/app");
        assert_eq!(
            resolve_path(base, "./backend"),
            Path::new("/srv/app/backend")
        );
        assert_eq!(
            resolve_path(base, "../shared/.env"),
            Path::new("/srv/shared/.env")
        );
        assert_eq!(resolve_path(base, "/abs/dir"), Path::new("/abs/dir"));
        assert_eq!(resolve_path(base, "."), Path::new("/srv/app"));
    }
}
