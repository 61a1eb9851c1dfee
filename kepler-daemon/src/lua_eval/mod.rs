//! Sandboxed Luau evaluation of `!lua` / `!lua_file` blocks at bake time.
//!
//! One [`LuaEvaluator`] lives for one bake of one config: the top-level `lua:`
//! block runs first, so the functions it defines are visible to every later
//! block, and `global` is shared by all blocks of that bake.
//!
//! The daemon runs as root and the scripts come from whoever wrote the config,
//! so every script is treated as hostile: the Lua state has no file, process
//! or environment access, library tables are frozen, `require` only reaches
//! `.lua` files inside the config's directory, and each evaluation is bounded
//! in wall-clock time ([`TIME_LIMIT`]) and memory ([`MEMORY_LIMIT`]).
//!
//! Submodules: `sandbox` builds the Lua state, `files` resolves paths inside
//! the config directory and implements `require`, `convert` turns results
//! into YAML, `location` turns Lua errors back into file/line/message.

mod convert;
mod files;
mod location;
mod sandbox;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlua::{ChunkMode, Lua};

use files::ConfigDir;
use location::SourceMap;
use sandbox::{Deadline, Scopes};
pub use sandbox::{MEMORY_LIMIT, TIME_LIMIT};

/// What a block can see as `ctx`. `env` grows stage by stage during a bake.
#[derive(Debug, Clone, Default)]
pub struct LuaContext {
    pub env: BTreeMap<String, String>,
    pub sys_env: BTreeMap<String, String>,
    pub env_file: BTreeMap<String, String>,
    pub service_name: Option<String>,
    pub hook_name: Option<String>,
}

/// A Lua failure, located for a person: config file, YAML path, Lua line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct LuaError {
    /// The file the failing Lua code lives in (the config, or a `!lua_file`).
    pub file: PathBuf,
    /// YAML path of the block, e.g. `services.backend.command`; empty for `lua:`.
    pub yaml_path: String,
    /// Line within `file`, when Lua reported one.
    pub line: Option<usize>,
    pub message: String,
}

impl LuaError {
    fn render(&self) -> String {
        let at = match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        };
        if self.yaml_path.is_empty() {
            format!("{at}: lua: {}", self.message)
        } else {
            format!("{at}: {}: lua: {}", self.yaml_path, self.message)
        }
    }
}

/// One sandboxed Luau state for one bake of one config.
pub struct LuaEvaluator {
    lua: Lua,
    scopes: Scopes,
    config_file: PathBuf,
    config_dir: Arc<ConfigDir>,
    /// Chunk name Lua uses for code that lives in the config file itself.
    config_chunk: String,
    sources: Arc<SourceMap>,
    deadline: Deadline,
}

impl LuaEvaluator {
    /// A fresh sandbox for one bake. `config_file` is the config's path (for
    /// errors); `require()` resolves modules inside its directory only.
    /// `lua_block` is the top-level `lua:` source and runs now, with `ctx`
    /// built from `ctx` (its `env` is the system environment at that stage).
    /// `lua_block_line` is the line of the `lua:` block's first source line in
    /// the config file, so errors point at the right line.
    pub fn new(
        config_file: &Path,
        lua_block: Option<&str>,
        lua_block_line: usize,
        ctx: &LuaContext,
    ) -> Result<Self, LuaError> {
        let config_dir = Arc::new(ConfigDir::of_config(config_file));
        let config_chunk = match config_file.file_name() {
            Some(name) => name.to_string_lossy().into_owned(),
            None => config_file.display().to_string(),
        };
        let sources = Arc::new(SourceMap::default());
        sources.register(&config_chunk, config_file);
        let deadline = Deadline::default();
        let (lua, scopes) = sandbox::new_state(config_file, &config_dir, &sources, &deadline)
            .map_err(|err| sources.locate(&err, config_file, ""))?;
        let evaluator = Self {
            lua,
            scopes,
            config_file: config_file.to_path_buf(),
            config_dir,
            config_chunk,
            sources,
            deadline,
        };
        if let Some(code) = lua_block {
            let source = evaluator.config_source(code, lua_block_line);
            evaluator.run(&source, Scope::Shared, "", ctx)?;
        }
        Ok(evaluator)
    }

    /// Evaluates one `!lua` block found at `yaml_path`, whose code starts at
    /// line `first_line` of the config file. The block's return value comes back
    /// as YAML (nil becomes `Null`).
    pub fn eval_block(
        &self,
        code: &str,
        yaml_path: &str,
        first_line: usize,
        ctx: &LuaContext,
    ) -> Result<serde_yaml::Value, LuaError> {
        let source = self.config_source(code, first_line);
        let result = self.run(&source, Scope::Own, yaml_path, ctx)?;
        to_yaml(result, &source, yaml_path)
    }

    /// Evaluates a `!lua_file` (path relative to the config's directory).
    pub fn eval_file(
        &self,
        file: &str,
        yaml_path: &str,
        ctx: &LuaContext,
    ) -> Result<serde_yaml::Value, LuaError> {
        let path = self.config_dir.given().join(file);
        let refused = |message: String| LuaError {
            file: path.clone(),
            yaml_path: yaml_path.to_string(),
            line: None,
            message,
        };
        let relative = files::relative_file_path(file).map_err(refused)?;
        let code = self.config_dir.read(&relative).map_err(refused)?;
        let chunk = files::chunk_name(&relative);
        self.sources.register(&chunk, &path);
        let source = Source {
            code,
            chunk,
            file: path,
        };
        let result = self.run(&source, Scope::Own, yaml_path, ctx)?;
        to_yaml(result, &source, yaml_path)
    }

    /// A block of the config file, padded so Lua's line numbers are the
    /// config's.
    fn config_source(&self, code: &str, first_line: usize) -> Source {
        Source {
            code: at_line(code, first_line),
            chunk: self.config_chunk.clone(),
            file: self.config_file.clone(),
        }
    }

    /// Runs `source` with a fresh `ctx`, inside the time limit.
    fn run(
        &self,
        source: &Source,
        scope: Scope,
        yaml_path: &str,
        ctx: &LuaContext,
    ) -> Result<mlua::Value, LuaError> {
        let _armed = self.deadline.arm(TIME_LIMIT);
        let outcome = (|| {
            sandbox::install_ctx(&self.lua, &self.scopes, ctx)?;
            let env = match scope {
                Scope::Shared => self.scopes.shared().clone(),
                Scope::Own => self.scopes.for_chunk(&self.lua)?,
            };
            self.lua
                .load(source.code.as_str())
                .set_name(format!("={}", source.chunk))
                .set_mode(ChunkMode::Text)
                .set_environment(env)
                .into_function()?
                .call::<mlua::Value>(())
        })();
        outcome.map_err(|err| self.sources.locate(&err, &source.file, yaml_path))
    }
}

/// Lua code and where it came from.
struct Source {
    code: String,
    /// The name Lua reports positions with (see `location`).
    chunk: String,
    file: PathBuf,
}

/// Which environment a chunk's globals go to (see `sandbox`).
enum Scope {
    /// The `lua:` block: its globals are visible to every later chunk.
    Shared,
    /// Blocks and files: their globals stay their own.
    Own,
}

fn to_yaml(
    value: mlua::Value,
    source: &Source,
    yaml_path: &str,
) -> Result<serde_yaml::Value, LuaError> {
    convert::to_yaml(&value, yaml_path).map_err(|message| LuaError {
        file: source.file.clone(),
        yaml_path: yaml_path.to_string(),
        line: None,
        message,
    })
}

/// Pads `code` with blank lines so Lua's line 1 is `first_line` of the file,
/// which makes every line number Lua reports a line of the config itself.
fn at_line(code: &str, first_line: usize) -> String {
    let mut source = "\n".repeat(first_line.saturating_sub(1));
    source.push_str(code);
    source
}
