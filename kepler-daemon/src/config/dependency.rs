//! Decoding `depends_on` in its list and mapping forms. Checks that need the
//! whole config (missing targets, healthchecks, cycles) run later in
//! `validate.rs` from the [`DependencyRef`]s recorded here.

use std::collections::BTreeMap;

use super::decode::{boolean, fields, keyword, parsed, parsed_text, text};
use super::document::{Mark, Node, NodeValue};
use super::error::Diagnostics;
use super::snapshot::{DependencyCondition, DependencyEdge};
use super::values::{ExitCodeFilter, ExitCodeRange, HumanDuration};

const EDGE_KEYS: &[&str] = &["condition", "timeout", "restart", "exit_code", "wait"];

/// Where one dependency edge was written, for the whole-config checks.
#[derive(Debug, Clone)]
pub(crate) struct DependencyRef {
    pub from: String,
    pub to: String,
    pub path: String,
    pub mark: Mark,
    pub condition: DependencyCondition,
    pub condition_path: String,
    pub condition_mark: Mark,
}

pub(crate) fn depends_on(
    service: &str,
    node: &Node,
    path: &str,
    default_timeout: Option<HumanDuration>,
    diag: &mut Diagnostics,
    refs: &mut Vec<DependencyRef>,
) -> BTreeMap<String, DependencyEdge> {
    let mut edges = BTreeMap::new();
    let default_edge = |condition: DependencyCondition| DependencyEdge {
        condition,
        timeout: default_timeout,
        restart: false,
        exit_code: None,
        wait: condition.is_startup(),
    };
    let mut add = |name: &str,
                   mark: Mark,
                   edge_path: String,
                   edge: DependencyEdge,
                   condition_at: Option<(String, Mark)>,
                   diag: &mut Diagnostics| {
        if edges.contains_key(name) {
            diag.at(mark, &edge_path, format!("`{name}` is listed twice"));
            return;
        }
        let (condition_path, condition_mark) =
            condition_at.unwrap_or_else(|| (edge_path.clone(), mark));
        refs.push(DependencyRef {
            from: service.to_owned(),
            to: name.to_owned(),
            path: edge_path,
            mark,
            condition: edge.condition,
            condition_path,
            condition_mark,
        });
        edges.insert(name.to_owned(), edge);
    };
    match &node.value {
        NodeValue::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{index}]");
                if let Some(name) = text(item, &item_path, diag) {
                    add(name, item.mark, item_path, default_edge(DependencyCondition::ServiceStarted), None, diag);
                }
            }
        }
        NodeValue::Map(entries) => {
            for entry in entries {
                let edge_path = format!("{path}.{}", entry.key);
                if entry.value.value == NodeValue::Null {
                    add(&entry.key, entry.key_mark, edge_path, default_edge(DependencyCondition::ServiceStarted), None, diag);
                    continue;
                }
                let Some(map) = fields(&entry.value, &edge_path, EDGE_KEYS, diag) else {
                    continue;
                };
                let conditions: Vec<(&str, DependencyCondition)> =
                    DependencyCondition::ALL.iter().map(|c| (c.name(), *c)).collect();
                let condition_node = map.get("condition");
                let condition = match condition_node {
                    Some(node) => keyword(node, &map.path("condition"), "condition", &conditions, diag),
                    None => Some(DependencyCondition::ServiceStarted),
                };
                let Some(condition) = condition else { continue };
                let mut edge = default_edge(condition);
                if let Some(node) = map.get("timeout") {
                    edge.timeout = parsed(node, &map.path("timeout"), diag).or(edge.timeout);
                }
                if let Some(node) = map.get("restart") {
                    edge.restart = boolean(node, &map.path("restart"), diag).unwrap_or(false);
                }
                if let Some(node) = map.get("wait") {
                    edge.wait = boolean(node, &map.path("wait"), diag).unwrap_or(edge.wait);
                }
                if let Some(node) = map.get("exit_code") {
                    if condition.accepts_exit_code() {
                        edge.exit_code = exit_codes(node, &map.path("exit_code"), diag);
                    } else {
                        diag.at(
                            node.mark,
                            &map.path("exit_code"),
                            format!(
                                "`exit_code` only applies to service_failed or service_stopped, not {}",
                                condition.name()
                            ),
                        );
                    }
                }
                let condition_at = condition_node.map(|n| (map.path("condition"), n.mark));
                add(&entry.key, entry.key_mark, edge_path, edge, condition_at, diag);
            }
        }
        _ => diag.at(
            node.mark,
            path,
            format!(
                "expected a list of service names or a mapping of service name to options, found {}",
                node.describe()
            ),
        ),
    }
    edges
}

/// `[5, '1:10']`: codes and inclusive ranges.
fn exit_codes(node: &Node, path: &str, diag: &mut Diagnostics) -> Option<ExitCodeFilter> {
    let items: Vec<&Node> = match &node.value {
        NodeValue::Seq(items) => items.iter().collect(),
        NodeValue::Scalar { .. } => vec![node],
        _ => {
            diag.at(
                node.mark,
                path,
                format!(
                    "expected a list of exit codes like [5, '1:10'], found {}",
                    node.describe()
                ),
            );
            return None;
        }
    };
    let mut ranges = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let range = text(item, &item_path, diag)
            .and_then(|code| parsed_text::<ExitCodeRange>(code, item.mark, &item_path, diag));
        ranges.extend(range);
    }
    Some(ExitCodeFilter(ranges))
}
