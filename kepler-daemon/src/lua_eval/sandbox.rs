//! The Lua state itself: which libraries exist, what is frozen, and the
//! time and memory limits.
//!
//! Layout, innermost first:
//! - each `!lua` block, `!lua_file` and module runs in its own writable
//!   environment, so a stray global in one block does not leak into another;
//! - reads fall through to the shared environment, where the `lua:` block's
//!   globals live, along with `ctx` (replaced before every evaluation) and
//!   `global` (the one table meant for cross-block state);
//! - reads fall through again to Luau's real globals, which hold only safe
//!   libraries and are frozen with `Lua::sandbox` (library tables, the string
//!   metatable and the globals table become read-only).
//!
//! None of our environments is a Luau "safe env", so global reads such as
//! `ctx.env` are looked up when they run, not cached when the chunk loads: a
//! `lua:` function sees the `ctx` of whichever block calls it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mlua::{Lua, LuaOptions, MultiValue, StdLib, Table, VmState};

use super::files::{self, ConfigDir};
use super::location::SourceMap;
use super::LuaContext;

/// Wall-clock budget of one evaluation (one block, one file, or `lua:`).
pub const TIME_LIMIT: Duration = Duration::from_secs(1);
/// Upper bound of everything one evaluator's Lua state allocates.
pub const MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// Base functions that are not needed to compute config values and would
/// widen what a script can reach: code loading and environment swapping.
const REMOVED_GLOBALS: &[&str] = &["loadstring", "getfenv", "setfenv", "newproxy"];

/// When the evaluation in progress must stop, in CPU time of the thread that
/// runs it; `None` between evaluations.
///
/// CPU time rather than wall time: the limit is there to stop a script that
/// computes forever, and a script that is merely starved of CPU on a loaded
/// machine must get the same verdict as on an idle one.
#[derive(Clone, Default)]
pub(super) struct Deadline(Arc<Mutex<Option<Duration>>>);

impl Deadline {
    /// Starts the clock; the returned guard stops it when the evaluation ends.
    /// Must be called on the thread that runs the evaluation.
    pub(super) fn arm(&self, limit: Duration) -> DeadlineGuard<'_> {
        *self.slot() = Some(thread_cpu_time() + limit);
        DeadlineGuard(self)
    }

    fn expired(&self) -> bool {
        matches!(*self.slot(), Some(at) if thread_cpu_time() >= at)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Duration>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into; this clock exists on
    // every Linux since 2.6.12, and if it failed `now` stays zero, which only
    // delays the verdict to the next check.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

pub(super) struct DeadlineGuard<'a>(&'a Deadline);

impl Drop for DeadlineGuard<'_> {
    fn drop(&mut self) {
        *self.0.slot() = None;
    }
}

/// The environments chunks run in (see the module doc).
#[derive(Clone)]
pub(super) struct Scopes {
    shared: Table,
    /// Metatable of every per-chunk environment: reads go to `shared`.
    chunk_meta: Table,
}

impl Scopes {
    /// Where the `lua:` block runs and `ctx` lives.
    pub(super) fn shared(&self) -> &Table {
        &self.shared
    }

    /// A fresh environment for one block, file or module.
    pub(super) fn for_chunk(&self, lua: &Lua) -> mlua::Result<Table> {
        let env = lua.create_table()?;
        env.set_metatable(Some(self.chunk_meta.clone()))?;
        env.raw_set("_G", &env)?;
        Ok(env)
    }
}

/// A read-only metatable that sends reads to `parent` and hides itself.
fn fall_through_to(lua: &Lua, parent: Table) -> mlua::Result<Table> {
    let meta = lua.create_table()?;
    meta.raw_set("__index", parent)?;
    meta.raw_set("__metatable", "locked")?;
    meta.set_readonly(true);
    Ok(meta)
}

/// Builds the sandboxed state and the environments chunks run in.
pub(super) fn new_state(
    config_file: &Path,
    config_dir: &Arc<ConfigDir>,
    sources: &Arc<SourceMap>,
    deadline: &Deadline,
) -> mlua::Result<(Lua, Scopes)> {
    // No coroutine, buffer or vector: not needed for config values.
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::BIT;
    // Luau's `os` only has clock, date, difftime and time.
    let lua = Lua::new_with(libs | StdLib::OS, LuaOptions::new())?;
    lua.set_memory_limit(MEMORY_LIMIT)?;

    let globals = lua.globals();
    for name in REMOVED_GLOBALS {
        globals.raw_remove(*name)?;
    }
    globals.raw_set("print", print_function(&lua, config_file)?)?;

    let shared = lua.create_table()?;
    shared.set_metatable(Some(fall_through_to(&lua, globals.clone())?))?;
    shared.raw_set("_G", &shared)?;
    shared.raw_set("global", lua.create_table()?)?;
    let chunk_meta = fall_through_to(&lua, shared.clone())?;
    let scopes = Scopes { shared, chunk_meta };

    let require = files::require_function(&lua, &scopes, config_dir, sources)?;
    globals.raw_set("require", require)?;
    // Freezes every library table, the string metatable and the globals, and
    // limits `collectgarbage` to "count". Our environments are not in the
    // globals, so they stay writable.
    lua.sandbox(true)?;

    let clock = deadline.clone();
    lua.set_interrupt(move |lua| {
        if clock.expired() {
            let at = running_location(lua).unwrap_or_default();
            return Err(mlua::Error::runtime(format!(
                "{at}script exceeded the time limit of {TIME_LIMIT:?}"
            )));
        }
        Ok(VmState::Continue)
    });
    Ok((lua, scopes))
}

/// Replaces `ctx` in the shared environment with read-only tables built from
/// `ctx`. Done before every evaluation, so functions read the caller's `ctx`.
pub(super) fn install_ctx(lua: &Lua, scopes: &Scopes, ctx: &LuaContext) -> mlua::Result<()> {
    let table = lua.create_table()?;
    for (name, vars) in [
        ("env", &ctx.env),
        ("sys_env", &ctx.sys_env),
        ("env_file", &ctx.env_file),
    ] {
        let vars = lua.create_table_from(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        vars.set_readonly(true);
        table.raw_set(name, vars)?;
    }
    table.raw_set("service_name", ctx.service_name.as_deref())?;
    table.raw_set("hook_name", ctx.hook_name.as_deref())?;
    table.set_readonly(true);
    scopes.shared.raw_set("ctx", table)
}

/// `print` writes to the daemon's log instead of its stdout, a bounded
/// amount per bake so a loop cannot flood the log.
fn print_function(lua: &Lua, config_file: &Path) -> mlua::Result<mlua::Function> {
    const MAX_LINES: usize = 100;
    const MAX_LINE_BYTES: usize = 4096;
    let config = config_file.display().to_string();
    let printed = AtomicUsize::new(0);
    lua.create_function(move |_, args: MultiValue| {
        let count = printed.fetch_add(1, Ordering::Relaxed);
        if count > MAX_LINES {
            return Ok(());
        }
        if count == MAX_LINES {
            tracing::warn!(target: "kepler::lua", config = %config, "print: further output of this bake suppressed");
            return Ok(());
        }
        let parts = args
            .iter()
            .map(|value| value.to_string())
            .collect::<mlua::Result<Vec<_>>>()?;
        let mut line = parts.join("\t");
        if line.len() > MAX_LINE_BYTES {
            let cut = (0..=MAX_LINE_BYTES).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
            line.truncate(cut);
            line.push('…');
        }
        tracing::info!(target: "kepler::lua", config = %config, "{line}");
        Ok(())
    })
}

/// `chunk:line: ` of the innermost running Lua function, for the time-limit
/// error (raised from the interrupt, so Lua adds no position itself).
fn running_location(lua: &Lua) -> Option<String> {
    (0..4).find_map(|level| {
        lua.inspect_stack(level, |frame| {
            let line = frame.current_line()?;
            let source = frame.source().short_src?.into_owned();
            (source != "[C]").then(|| format!("{source}:{line}: "))
        })
        .flatten()
    })
}
