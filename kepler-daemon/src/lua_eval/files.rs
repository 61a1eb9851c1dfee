//! Reading Lua source from the config's directory, for `!lua_file` and
//! `require`, without ever leaving that directory.
//!
//! Names are checked first (no absolute paths, no `..`), then the path is
//! canonicalized and must stay under the canonical config directory, so a
//! symlink pointing out is refused. The file is opened without following a
//! final symlink and without blocking (a FIFO must not hang the daemon), and
//! the opened descriptor is checked once more through `/proc/self/fd`, so
//! swapping a directory for a symlink between check and open does not help.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mlua::{ChunkMode, Lua, Value};

use super::location::SourceMap;
use super::sandbox::Scopes;

/// Largest Lua source file read; far above any real config script.
const MAX_SOURCE_BYTES: u64 = 4 * 1024 * 1024;
/// Each nested `require` re-enters Lua from Rust and costs native stack
/// (about 15 KiB in a debug build); a 2 MiB thread overflows, aborting the
/// daemon, somewhere past 100 levels. Real configs nest a handful.
const MAX_REQUIRE_DEPTH: usize = 32;

/// The directory holding the config, as given and as canonicalized.
pub(super) struct ConfigDir {
    given: PathBuf,
    /// `None` when the directory cannot be resolved; reading then fails.
    canonical: Option<PathBuf>,
}

impl ConfigDir {
    pub(super) fn of_config(config_file: &Path) -> Self {
        let given = match config_file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let canonical = given.canonicalize().ok();
        Self { given, canonical }
    }

    pub(super) fn given(&self) -> &Path {
        &self.given
    }

    /// Reads `relative` (already checked by [`relative_file_path`] or
    /// [`module_path`]) if it really is a regular file inside the directory.
    pub(super) fn read(&self, relative: &Path) -> Result<String, String> {
        let shown = relative.display();
        let Some(root) = &self.canonical else {
            return Err(format!(
                "cannot read `{shown}`: the config directory {} is not accessible",
                self.given.display()
            ));
        };
        let resolved = root
            .join(relative)
            .canonicalize()
            .map_err(|err| format!("cannot read `{shown}`: {err}"))?;
        if !resolved.starts_with(root) {
            return Err(format!(
                "refusing `{shown}`: it resolves to {}, outside the config directory",
                resolved.display()
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&resolved)
            .map_err(|err| format!("cannot open `{shown}`: {err}"))?;
        if let Ok(opened) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            if !opened.starts_with(root) {
                return Err(format!(
                    "refusing `{shown}`: it was replaced by a path outside the config directory"
                ));
            }
        }
        read_source(file, &resolved).map_err(|err| format!("cannot read `{shown}`: {err}"))
    }
}

fn read_source(file: File, path: &Path) -> Result<String, String> {
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    if crate::write_access::reading_as_root() {
        crate::write_access::check_file(path, &meta)
            .map_err(|verdict| format!("refused: {verdict}"))?;
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_string())
}

/// Checks a `!lua_file` path: relative, no `..`, names a file.
pub(super) fn relative_file_path(file: &str) -> Result<PathBuf, String> {
    let path = Path::new(file);
    let mut relative = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => relative.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("refusing `{file}`: `..` may not leave the config directory"))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "refusing `{file}`: absolute paths are not allowed, use a path relative to the config directory"
                ))
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(format!("`{file}` does not name a file"));
    }
    Ok(relative)
}

/// Maps `require("dir.name")` to `dir/name.lua`.
pub(super) fn module_path(name: &str) -> Result<PathBuf, String> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(format!(
            "refusing module '{name}': absolute paths are not allowed"
        ));
    }
    if name.contains("..") {
        return Err(format!(
            "refusing module '{name}': `..` may not leave the config directory"
        ));
    }
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    if !name.split('.').all(valid) {
        return Err(format!(
            "invalid module name '{name}': use dot-separated names such as \"lib.ports\" for lib/ports.lua"
        ));
    }
    let mut path: PathBuf = name.split('.').collect();
    path.set_extension("lua");
    Ok(path)
}

/// The name Lua shows for code from `relative` (e.g. `lib/ports.lua:3:`).
pub(super) fn chunk_name(relative: &Path) -> String {
    relative.display().to_string()
}

/// `require`: runs modules from the config directory, each in its own
/// environment over the shared one, once per evaluator.
///
/// A Rust loader does the work and reports lookup failures as `(false,
/// message)`; a small Lua wrapper raises them with `error(message, 2)` so
/// the error points at the line that called `require`. Errors inside a
/// module propagate as they are, carrying the module's own file and line.
pub(super) fn require_function(
    lua: &Lua,
    scopes: &Scopes,
    dir: &Arc<ConfigDir>,
    sources: &Arc<SourceMap>,
) -> mlua::Result<mlua::Function> {
    let loaded = lua.create_table()?;
    let (scopes, dir, sources) = (scopes.clone(), Arc::clone(dir), Arc::clone(sources));
    let depth = Arc::new(AtomicUsize::new(0));
    let loader = lua.create_function(move |lua, name: String| {
        let Some(_nested) = NestingGuard::enter(&depth) else {
            let message = format!(
                "cannot load module '{name}': require is nested more than {MAX_REQUIRE_DEPTH} levels deep"
            );
            return Ok((false, Value::String(lua.create_string(message)?)));
        };
        let relative = match module_path(&name) {
            Ok(relative) => relative,
            Err(message) => return Ok((false, Value::String(lua.create_string(message)?))),
        };
        let key = chunk_name(&relative);
        match loaded.raw_get::<Value>(key.as_str())? {
            Value::Nil => {}
            // `false` marks a module whose body is still running.
            Value::Boolean(false) => {
                let message = format!("circular require of module '{name}'");
                return Ok((false, Value::String(lua.create_string(message)?)));
            }
            module => return Ok((true, module)),
        }
        let source = match dir.read(&relative) {
            Ok(source) => source,
            Err(message) => {
                let message = format!("cannot load module '{name}': {message}");
                return Ok((false, Value::String(lua.create_string(message)?)));
            }
        };
        sources.register(&key, &dir.given().join(&relative));
        loaded.raw_set(key.as_str(), false)?;
        let result = lua
            .load(source)
            .set_name(format!("={key}"))
            .set_mode(ChunkMode::Text)
            .set_environment(scopes.for_chunk(lua)?)
            .into_function()
            .and_then(|module| module.call::<Value>(name.as_str()));
        let module = match result {
            Ok(Value::Nil) => Value::Boolean(true),
            Ok(module) => module,
            Err(err) => {
                loaded.raw_remove(key.as_str())?;
                return Err(err);
            }
        };
        loaded.raw_set(key.as_str(), &module)?;
        Ok((true, module))
    })?;
    lua.load(REQUIRE_WRAPPER)
        .set_name("=require")
        .set_mode(ChunkMode::Text)
        .call(loader)
}

/// Counts one level of `require` nesting while alive; `None` past the limit.
struct NestingGuard<'a>(&'a AtomicUsize);

impl<'a> NestingGuard<'a> {
    fn enter(depth: &'a AtomicUsize) -> Option<Self> {
        let guard = NestingGuard(depth);
        let outer = depth.fetch_add(1, Ordering::SeqCst);
        (outer < MAX_REQUIRE_DEPTH).then_some(guard)
    }
}

impl Drop for NestingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const REQUIRE_WRAPPER: &str = r#"
local load_module = ...
return function(name)
    if type(name) ~= "string" then
        error("require expects a module name (a string)", 2)
    end
    local ok, result = load_module(name)
    if not ok then
        error(result, 2)
    end
    return result
end
"#;
