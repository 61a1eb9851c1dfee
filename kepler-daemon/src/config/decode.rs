//! Reading typed values out of document nodes.
//!
//! Each reader reports a mismatch (with path, what was found and what is
//! allowed) and returns `None`, so the caller carries on and one run finds
//! every error in the file.

use std::str::FromStr;

use super::document::{Entry, Mark, Node, NodeValue, ScalarStyle};
use super::error::Diagnostics;
use super::expand::Scope;

/// The YAML path of `key` under `path`.
pub(crate) fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The suggestion for an unknown key: the closest allowed key, if close.
pub(crate) fn closest<'a>(found: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (strsim::jaro_winkler(found, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The entries of a mapping whose keys were checked against `allowed`.
pub(crate) struct Fields<'n> {
    pub entries: &'n [Entry],
    pub path: String,
    pub mark: Mark,
}

impl<'n> Fields<'n> {
    /// The value of `key`, unless missing or written as null.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
            .filter(|node| node.value != NodeValue::Null)
    }

    pub fn path(&self, key: &str) -> String {
        child_path(&self.path, key)
    }
}

/// Reads a mapping, reporting each key not in `allowed` with a suggestion.
pub(crate) fn fields<'n>(
    node: &'n Node,
    path: &str,
    allowed: &[&str],
    diag: &mut Diagnostics,
) -> Option<Fields<'n>> {
    fields_checked(node, path, allowed, |_| false, diag)
}

/// Like [`fields`], but keys for which `ignored` holds are accepted too
/// (the top level's `x-` keys, which hold YAML anchors as in compose files).
pub(crate) fn fields_checked<'n>(
    node: &'n Node,
    path: &str,
    allowed: &[&str],
    ignored: impl Fn(&str) -> bool,
    diag: &mut Diagnostics,
) -> Option<Fields<'n>> {
    let NodeValue::Map(entries) = &node.value else {
        diag.at(
            node.mark,
            path,
            format!(
                "expected a mapping with keys like {}, found {}",
                allowed
                    .iter()
                    .take(3)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", "),
                node.describe()
            ),
        );
        return None;
    };
    for entry in entries {
        if !allowed.contains(&entry.key.as_str()) && !ignored(&entry.key) {
            let message = match closest(&entry.key, allowed) {
                Some(near) => format!("unknown field `{}`, did you mean `{near}`?", entry.key),
                None => format!(
                    "unknown field `{}`; expected one of {}",
                    entry.key,
                    allowed.join(", ")
                ),
            };
            diag.at(entry.key_mark, &child_path(path, &entry.key), message);
        }
    }
    Some(Fields {
        entries,
        path: path.to_owned(),
        mark: node.mark,
    })
}

/// The text of a scalar; numbers and booleans read as their text.
pub(crate) fn text<'n>(node: &'n Node, path: &str, diag: &mut Diagnostics) -> Option<&'n str> {
    match &node.value {
        NodeValue::Scalar { text, .. } => Some(text),
        _ => {
            diag.at(
                node.mark,
                path,
                format!("expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// A scalar written without quotes, for booleans and numbers.
pub(crate) fn plain(node: &Node) -> Option<&str> {
    match &node.value {
        NodeValue::Scalar {
            text,
            style: ScalarStyle::Plain,
        } => Some(text),
        _ => None,
    }
}

pub(crate) fn boolean(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<bool> {
    match plain(node) {
        Some("true" | "True" | "TRUE") => Some(true),
        Some("false" | "False" | "FALSE") => Some(false),
        _ => {
            diag.at(
                node.mark,
                path,
                format!("expected true or false, found {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn whole_number<T: TryFrom<u64>>(
    node: &Node,
    path: &str,
    diag: &mut Diagnostics,
) -> Option<T> {
    let value = plain(node)
        .and_then(|text| text.parse::<u64>().ok())
        .and_then(|n| T::try_from(n).ok());
    if value.is_none() {
        diag.at(
            node.mark,
            path,
            format!(
                "expected a whole number (0 to {}), found {}",
                max_of::<T>(),
                node.describe()
            ),
        );
    }
    value
}

/// The largest `u64` that converts into `T`, for messages.
fn max_of<T: TryFrom<u64>>() -> u64 {
    [u64::MAX, u32::MAX as u64, u16::MAX as u64]
        .into_iter()
        .find(|&n| T::try_from(n).is_ok())
        .unwrap_or(u8::MAX as u64)
}

/// A value in one of the text formats of `values.rs`.
pub(crate) fn parsed<T: FromStr<Err = String>>(
    node: &Node,
    path: &str,
    diag: &mut Diagnostics,
) -> Option<T> {
    let text = text(node, path, diag)?;
    parsed_text(text, node.mark, path, diag)
}

pub(crate) fn parsed_text<T: FromStr<Err = String>>(
    text: &str,
    mark: Mark,
    path: &str,
    diag: &mut Diagnostics,
) -> Option<T> {
    text.parse()
        .map_err(|message: String| diag.at(mark, path, message))
        .ok()
}

/// One of a fixed set of words, e.g. a condition or a policy.
pub(crate) fn keyword<T: Copy>(
    node: &Node,
    path: &str,
    what: &str,
    options: &[(&str, T)],
    diag: &mut Diagnostics,
) -> Option<T> {
    let text = text(node, path, diag)?;
    if let Some((_, value)) = options.iter().find(|(name, _)| *name == text) {
        return Some(*value);
    }
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    let hint = closest(text, &names)
        .map(|near| format!(" (did you mean `{near}`?)"))
        .unwrap_or_default();
    diag.at(
        node.mark,
        path,
        format!(
            "unknown {what} `{text}`; expected one of {}{hint}",
            names.join(", ")
        ),
    );
    None
}

/// A list of strings (scalars), each item read as text.
pub(crate) fn string_list(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<Vec<String>> {
    let NodeValue::Seq(items) = &node.value else {
        diag.at(
            node.mark,
            path,
            format!("expected a list of strings, found {}", node.describe()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.iter().enumerate() {
        // The item's path is only built for an error: this loop is hot.
        match &item.value {
            NodeValue::Scalar { text, .. } => out.push(text.clone()),
            _ => {
                text(item, &format!("{path}[{index}]"), diag);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A string with variables expanded (for the fields the spec expands).
pub(crate) fn expanded(
    node: &Node,
    path: &str,
    scope: &Scope<'_>,
    diag: &mut Diagnostics,
) -> Option<String> {
    let text = text(node, path, diag)?;
    scope
        .expand(text)
        .map_err(|err| diag.at(node.mark, path, err.to_string()))
        .ok()
}

/// An expanded string parsed into one of the formats of `values.rs`.
pub(crate) fn expanded_parsed<T: FromStr<Err = String>>(
    node: &Node,
    path: &str,
    scope: &Scope<'_>,
    diag: &mut Diagnostics,
) -> Option<T> {
    let text = expanded(node, path, scope, diag)?;
    parsed_text(&text, node.mark, path, diag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::document;
    use std::path::Path;

    #[test]
    fn unknown_keys_get_the_nearest_valid_key() {
        let allowed = ["command", "working_dir", "environment", "env_file"];
        assert_eq!(closest("workdir", &allowed), Some("working_dir"));
        assert_eq!(closest("enviroment", &allowed), Some("environment"));
        assert_eq!(closest("zzz", &allowed), None);
    }

    #[test]
    fn fields_report_every_unknown_key() {
        let root = document::parse("workdir: x\ncommand: y\nzzz: 1\n")
            .unwrap()
            .root
            .unwrap();
        let mut diag = Diagnostics::new(Path::new("k.yaml"));
        fields(&root, "services.a", &["command", "working_dir"], &mut diag).unwrap();
        let text = diag.into_errors().to_string();
        assert!(text.contains(
            "k.yaml:1:1: services.a.workdir: unknown field `workdir`, did you mean `working_dir`?"
        ));
        assert!(text.contains(
            "k.yaml:3:1: services.a.zzz: unknown field `zzz`; expected one of command, working_dir"
        ));
    }

    #[test]
    fn numbers_and_booleans_must_be_unquoted() {
        let root = document::parse("a: '5'\nb: 5\nc: yes\n")
            .unwrap()
            .root
            .unwrap();
        let NodeValue::Map(entries) = &root.value else {
            panic!()
        };
        let mut diag = Diagnostics::new(Path::new("k.yaml"));
        assert_eq!(whole_number::<u32>(&entries[0].value, "a", &mut diag), None);
        assert_eq!(
            whole_number::<u32>(&entries[1].value, "b", &mut diag),
            Some(5)
        );
        assert_eq!(boolean(&entries[2].value, "c", &mut diag), None);
        let text = diag.into_errors().to_string();
        assert!(text.contains("a: expected a whole number (0 to 4294967295), found `5`"));
        assert!(text.contains("c: expected true or false, found `yes`"));
    }
}
