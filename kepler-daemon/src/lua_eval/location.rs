//! Turning an `mlua::Error` into a [`LuaError`] a person can act on.
//!
//! Every chunk is named after its file relative to the config directory
//! (`kepler.yaml`, `lib/ports.lua`), so Lua's own messages start with
//! `name:line: `. The map of issued chunk names lets us parse that prefix back
//! into a file and line without guessing where a name ends; the innermost
//! prefix wins, so an error raised in a module points into the module.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::sandbox::MEMORY_LIMIT;
use super::LuaError;

#[derive(Default)]
pub(super) struct SourceMap {
    chunks: Mutex<HashMap<String, PathBuf>>,
}

impl SourceMap {
    pub(super) fn register(&self, chunk: &str, file: &Path) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.insert(chunk.to_string(), file.to_path_buf());
    }

    /// Locates `err`, which happened while evaluating `yaml_path` whose code
    /// lives in `file` (used when Lua reported no position).
    pub(super) fn locate(&self, err: &mlua::Error, file: &Path, yaml_path: &str) -> LuaError {
        let mut message = root_message(err);
        let mut at = None;
        while let Some((chunk_file, line, rest)) = self.split_position(&message) {
            at = Some((chunk_file, line));
            message = rest.to_string();
        }
        let (file, line) = match at {
            Some((chunk_file, line)) => (chunk_file, Some(line)),
            None => (file.to_path_buf(), None),
        };
        LuaError {
            file,
            yaml_path: yaml_path.to_string(),
            line,
            message: explain(message),
        }
    }

    /// Splits `chunk:line: rest` when `chunk` is one of ours.
    fn split_position<'m>(&self, message: &'m str) -> Option<(PathBuf, usize, &'m str)> {
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.iter().find_map(|(chunk, file)| {
            let rest = message.strip_prefix(chunk.as_str())?.strip_prefix(':')?;
            let digits = rest.find(|c: char| !c.is_ascii_digit())?;
            let line = rest[..digits].parse().ok()?;
            let rest = rest[digits..].strip_prefix(':')?;
            Some((file.clone(), line, rest.trim_start()))
        })
    }
}

/// The message Lua produced, without mlua's wrapping and stack traceback.
fn root_message(err: &mlua::Error) -> String {
    let message = match err {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            return root_message(cause)
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(message) => message.clone(),
        mlua::Error::MemoryError(_) => memory_message(),
        other => other.to_string(),
    };
    let message = match message.find("\nstack traceback:") {
        Some(end) => &message[..end],
        None => &message,
    };
    message.trim().to_string()
}

fn memory_message() -> String {
    format!(
        "script exceeded the memory limit of {} MiB",
        MEMORY_LIMIT / (1024 * 1024)
    )
}

/// Adds what to do to Luau's terse messages where we know the cause.
fn explain(message: String) -> String {
    if message == "not enough memory" {
        return memory_message();
    }
    // mlua renders a non-string error value with `tostring`.
    if message.starts_with("table: 0x") {
        return format!("error() was called with a table ({message}); pass a string message");
    }
    if message.eq_ignore_ascii_case("attempt to modify a readonly table") {
        return "attempt to modify a read-only table: ctx, ctx.env, ctx.sys_env, \
                ctx.env_file and the standard libraries are read-only; keep shared \
                state in `global`"
            .to_string();
    }
    message
}
