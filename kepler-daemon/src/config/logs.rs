//! Decoding `logs` (global defaults under `kepler.logs`, per-service
//! overrides): each key written replaces the inherited value.

use super::decode::{boolean, fields, keyword, parsed};
use super::document::{Node, NodeValue};
use super::error::Diagnostics;
use super::snapshot::{LogConfig, Retention};
use super::values::ByteSize;

const LOG_KEYS: &[&str] = &["max_size", "buffer_size", "timestamp", "store", "retention"];

/// The largest `buffer_size`: a buffer is memory the daemon holds per
/// stream, and past a few hundred KiB it buys no throughput.
pub const MAX_BUFFER_SIZE: ByteSize = ByteSize(crate::logs::MAX_BUFFER_SIZE);
/// The smallest `max_size`: its two segments must still hold whole lines.
pub const MIN_MAX_SIZE: ByteSize = ByteSize(crate::logs::MIN_MAX_SIZE);
const RETENTION_KEYS: &[&str] = &["on_start", "on_stop", "on_restart", "on_exit"];

pub(crate) fn logs(
    node: &Node,
    path: &str,
    inherited: &LogConfig,
    diag: &mut Diagnostics,
) -> LogConfig {
    let mut logs = inherited.clone();
    let Some(map) = fields(node, path, LOG_KEYS, diag) else {
        return logs;
    };
    if let Some(node) = map.get("max_size") {
        let path = map.path("max_size");
        let max_size: Option<ByteSize> = parsed(node, &path, diag);
        match max_size {
            Some(size) if size.0 < MIN_MAX_SIZE.0 => diag.at(
                node.mark,
                &path,
                format!("{size} is too small: a log keeps two segments of half of max_size each, and max_size must be at least {MIN_MAX_SIZE}"),
            ),
            Some(size) => logs.max_size = Some(size),
            None => {}
        }
    }
    if let Some(node) = map.get("buffer_size") {
        let path = map.path("buffer_size");
        let buffer_size: Option<ByteSize> = parsed(node, &path, diag);
        match buffer_size {
            Some(size) if size.0 > MAX_BUFFER_SIZE.0 => diag.at(
                node.mark,
                &path,
                format!("{size} is too large: the daemon holds a stream's buffer in memory, so buffer_size is at most {MAX_BUFFER_SIZE} (16K already gets most of the throughput)"),
            ),
            Some(size) => logs.buffer_size = size,
            None => {}
        }
    }
    if let Some(node) = map.get("timestamp") {
        logs.timestamp = boolean(node, &map.path("timestamp"), diag).unwrap_or(logs.timestamp);
    }
    if let Some(node) = map.get("store") {
        let path = map.path("store");
        if let NodeValue::Map(_) = node.value {
            if let Some(store) = fields(node, &path, &["stdout", "stderr"], diag) {
                if let Some(node) = store.get("stdout") {
                    logs.store.stdout = boolean(node, &store.path("stdout"), diag).unwrap_or(true);
                }
                if let Some(node) = store.get("stderr") {
                    logs.store.stderr = boolean(node, &store.path("stderr"), diag).unwrap_or(true);
                }
            }
        } else if let Some(store) = boolean(node, &path, diag) {
            logs.store.stdout = store;
            logs.store.stderr = store;
        }
    }
    if let Some(node) = map.get("retention") {
        if let Some(retention) = fields(node, &map.path("retention"), RETENTION_KEYS, diag) {
            let options = [("clear", Retention::Clear), ("retain", Retention::Retain)];
            let slots = [
                ("on_start", &mut logs.retention.on_start),
                ("on_stop", &mut logs.retention.on_stop),
                ("on_restart", &mut logs.retention.on_restart),
                ("on_exit", &mut logs.retention.on_exit),
            ];
            for (key, slot) in slots {
                if let Some(node) = retention.get(key) {
                    if let Some(value) =
                        keyword(node, &retention.path(key), "retention", &options, diag)
                    {
                        *slot = value;
                    }
                }
            }
        }
    }
    logs
}
