//! Decoding `env_file` and `environment` (of services and hooks): the first
//! two expansion stages of a bake.

use std::path::PathBuf;

use super::bake::{resolve_path, BakeContext, EnvFileCopy};
use super::decode::{expanded, text};
use super::document::{Node, NodeValue};
use super::error::Diagnostics;
use super::expand::Scope;
use crate::env::{parse_dotenv, EnvMap};

/// Reads the `env_file` at `node`: its path is expanded with `scope` (stage
/// one) and resolved against the config's directory; its values may use
/// `scope` and the file's own earlier variables.
pub(crate) fn read_env_file(
    node: Option<&Node>,
    path: &str,
    scope: &Scope<'_>,
    cx: &mut BakeContext<'_>,
) -> (Option<PathBuf>, EnvMap) {
    let Some(node) = node else {
        return (None, EnvMap::new());
    };
    let Some(written) = expanded(node, path, scope, &mut cx.diag) else {
        return (None, EnvMap::new());
    };
    let file = resolve_path(&cx.config_dir, &written);
    let contents = match read_bounded(&file) {
        Ok(contents) => contents,
        Err(err) => {
            cx.diag.at(
                node.mark,
                path,
                format!("cannot read env file `{}`: {err}", file.display()),
            );
            return (Some(file), EnvMap::new());
        }
    };
    let vars = match parse_dotenv(&contents, scope) {
        Ok(vars) => vars,
        Err(err) => {
            cx.diag.at(
                node.mark,
                path,
                format!("env file `{}` {err}", file.display()),
            );
            EnvMap::new()
        }
    };
    if !cx.env_files.iter().any(|copy| copy.path == file) {
        cx.env_files.push(EnvFileCopy {
            path: file.clone(),
            contents,
        });
    }
    (Some(file), vars)
}

/// Decodes `environment` (a list of `KEY=value` or a mapping). Values are
/// expanded with `scope` plus the entries above them, so `B=${A}/x` may use
/// an `A` set earlier in the same list. Keys are taken as written.
pub(crate) fn environment(
    node: Option<&Node>,
    path: &str,
    scope: &Scope<'_>,
    diag: &mut Diagnostics,
) -> EnvMap {
    let mut vars = EnvMap::new();
    let Some(node) = node else {
        return vars;
    };
    match &node.value {
        NodeValue::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                // Built only for errors: this loop is hot in big configs.
                let item_path = || format!("{path}[{index}]");
                let NodeValue::Scalar { text: entry, .. } = &item.value else {
                    text(item, &item_path(), diag);
                    continue;
                };
                let Some((key, value)) = entry.split_once('=') else {
                    diag.at(
                        item.mark,
                        &item_path(),
                        format!("`{entry}` has no `=`; write {entry}=value, or {entry}=${{{entry}}} to pass a system variable"),
                    );
                    continue;
                };
                if let Some(value) = expand_entry(key, value, item, &item_path, scope, &vars, diag)
                {
                    vars.insert(key.to_owned(), value);
                }
            }
        }
        NodeValue::Map(entries) => {
            for entry in entries {
                let entry_path = || format!("{path}.{}", entry.key);
                let value = match &entry.value.value {
                    NodeValue::Null => "",
                    NodeValue::Scalar { text, .. } => text.as_str(),
                    _ => match text(&entry.value, &entry_path(), diag) {
                        Some(value) => value,
                        None => continue,
                    },
                };
                if let Some(value) = expand_entry(
                    &entry.key,
                    value,
                    &entry.value,
                    &entry_path,
                    scope,
                    &vars,
                    diag,
                ) {
                    vars.insert(entry.key.clone(), value);
                }
            }
        }
        _ => diag.at(
            node.mark,
            path,
            format!(
                "expected a list of KEY=value strings or a mapping, found {}",
                node.describe()
            ),
        ),
    }
    vars
}

fn expand_entry(
    key: &str,
    value: &str,
    node: &Node,
    path: &dyn Fn() -> String,
    scope: &Scope<'_>,
    earlier: &EnvMap,
    diag: &mut Diagnostics,
) -> Option<String> {
    if key.is_empty() || key.contains('\0') {
        diag.at(
            node.mark,
            &path(),
            format!("`{key}` is not a variable name; write KEY=value"),
        );
        return None;
    }
    scope
        .with(earlier)
        .expand(value)
        .map_err(|err| diag.at(node.mark, &path(), err.to_string()))
        .ok()
}

/// Largest env file read.
const MAX_ENV_FILE: u64 = 1024 * 1024;

/// Reads an env file that must be a regular file of at most
/// [`MAX_ENV_FILE`] bytes (and, when baking with root's rights, writable
/// only by root). Opened without blocking, so naming a FIFO or a device
/// cannot hang or flood the bake.
fn read_bounded(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if crate::write_access::reading_as_root() {
        crate::write_access::check_file(path, &meta)
            .map_err(|verdict| std::io::Error::other(format!("refused: {verdict}")))?;
    }
    if meta.len() > MAX_ENV_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_ENV_FILE / 1024
        )));
    }
    let mut text = String::new();
    file.take(MAX_ENV_FILE + 1).read_to_string(&mut text)?;
    Ok(text)
}
