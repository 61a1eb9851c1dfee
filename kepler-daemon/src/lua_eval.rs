//! Sandboxed Luau evaluation of `!lua` / `!lua_file` blocks at bake time.
//!
//! One [`LuaEvaluator`] lives for one bake of one config: the top-level `lua:`
//! block runs first, so the functions it defines are visible to every later
//! block, and `global` is shared by all blocks of that bake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

pub struct LuaEvaluator {
    _private: (),
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
        let _ = (config_file, lua_block, lua_block_line, ctx);
        unimplemented!("filled in by the Lua sandbox work")
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
        let _ = (code, yaml_path, first_line, ctx);
        unimplemented!("filled in by the Lua sandbox work")
    }

    /// Evaluates a `!lua_file` (path relative to the config's directory).
    pub fn eval_file(
        &self,
        file: &str,
        yaml_path: &str,
        ctx: &LuaContext,
    ) -> Result<serde_yaml::Value, LuaError> {
        let _ = (file, yaml_path, ctx);
        unimplemented!("filled in by the Lua sandbox work")
    }
}
