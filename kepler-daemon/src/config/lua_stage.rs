//! The Lua stage of a bake: replaces each `!lua` / `!lua_file` node with the
//! value its code returns, before the node is decoded.
//!
//! The bake decides the order (a service's `env_file` first, then its
//! `environment`, then the rest in file order) and what `ctx` holds at each
//! step; this module runs one subtree at a time through [`LuaEvaluator`].
//! Configs without tags or a `lua:` block never create an evaluator.

use serde_yaml::Value;

use super::document::{Entry, Mark, Node, NodeTag, NodeValue, ScalarStyle};
use super::error::{ConfigError, Diagnostics};
use crate::env::EnvMap;
use crate::lua_eval::{LuaContext, LuaError, LuaEvaluator};

pub(crate) struct LuaStage {
    evaluator: Option<LuaEvaluator>,
    /// Whether the document has any tag at all; otherwise every call is a no-op.
    has_tags: bool,
    failed: bool,
}

/// A `ctx` built only when a subtree really holds a Lua block, because it
/// clones environment maps.
pub(crate) struct LazyContext<'f> {
    make: &'f dyn Fn() -> LuaContext,
    built: Option<LuaContext>,
}

impl<'f> LazyContext<'f> {
    pub fn new(make: &'f dyn Fn() -> LuaContext) -> Self {
        Self { make, built: None }
    }

    fn get(&mut self) -> &LuaContext {
        self.built.get_or_insert_with(self.make)
    }
}

/// The `ctx` of a stage: `env` is what the stage may see so far.
pub(crate) fn context(
    env: EnvMap,
    sys_env: &EnvMap,
    env_file: &EnvMap,
    service_name: Option<&str>,
    hook_name: Option<&str>,
) -> LuaContext {
    LuaContext {
        env,
        sys_env: sys_env.clone(),
        env_file: env_file.clone(),
        service_name: service_name.map(str::to_owned),
        hook_name: hook_name.map(str::to_owned),
    }
}

impl LuaStage {
    /// Runs the `lua:` block (if any) in a fresh sandbox when the config
    /// uses Lua at all. `lua_block` is the code and its first line.
    pub fn start(
        config_file: &std::path::Path,
        has_tags: bool,
        has_lua_tags: bool,
        lua_block: Option<(&str, usize)>,
        sys_env: &EnvMap,
    ) -> Result<Self, ConfigError> {
        let evaluator = if has_lua_tags || lua_block.is_some() {
            let ctx = context(sys_env.clone(), sys_env, &EnvMap::new(), None, None);
            let (code, line) = lua_block.map_or((None, 0), |(code, line)| (Some(code), line));
            Some(LuaEvaluator::new(config_file, code, line, &ctx).map_err(lua_error)?)
        } else {
            None
        };
        Ok(Self {
            evaluator,
            has_tags,
            failed: false,
        })
    }

    /// Whether the document has tags to resolve at all.
    pub fn active(&self) -> bool {
        self.has_tags
    }

    /// Whether a Lua block failed; the bake stops at the end of the service.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Resolves `node` and everything under it.
    pub fn resolve(
        &mut self,
        node: &mut Node,
        path: &str,
        ctx: &mut LazyContext<'_>,
        diag: &mut Diagnostics,
    ) {
        if !self.has_tags || self.failed {
            return;
        }
        self.resolve_here(node, path, ctx, diag);
        match &mut node.value {
            NodeValue::Seq(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.resolve(item, &format!("{path}[{index}]"), ctx, diag);
                }
            }
            NodeValue::Map(entries) => {
                for entry in entries {
                    let child = super::decode::child_path(path, &entry.key);
                    self.resolve(&mut entry.value, &child, ctx, diag);
                }
            }
            _ => {}
        }
    }

    /// Resolves the tag of `node` itself, not of its children.
    pub fn resolve_here(
        &mut self,
        node: &mut Node,
        path: &str,
        ctx: &mut LazyContext<'_>,
        diag: &mut Diagnostics,
    ) {
        if !self.has_tags || self.failed {
            return;
        }
        let tag = node.tag.take();
        let is_file = match tag {
            None | Some(NodeTag::Core(_)) => return,
            Some(NodeTag::Unknown(name)) => {
                diag.at(
                    node.mark,
                    path,
                    format!("unknown tag `{name}`; expected `!lua` (inline Lua code) or `!lua_file` (a Lua file path)"),
                );
                return;
            }
            Some(NodeTag::Lua) => false,
            Some(NodeTag::LuaFile) => true,
        };
        let NodeValue::Scalar { text, .. } = &node.value else {
            let which = if is_file { "!lua_file" } else { "!lua" };
            diag.at(
                node.mark,
                path,
                format!("`{which}` expects a string, found {}", node.describe()),
            );
            return;
        };
        let Some(evaluator) = &self.evaluator else {
            return;
        };
        let result = if is_file {
            evaluator.eval_file(text, path, ctx.get())
        } else {
            evaluator.eval_block(text, path, node.mark.line, ctx.get())
        };
        match result {
            Ok(value) => match node_from_lua(value, node.mark) {
                Ok(replacement) => *node = replacement,
                Err(message) => {
                    diag.at(node.mark, path, message);
                    self.failed = true;
                }
            },
            Err(err) => {
                diag.push(lua_error(err));
                self.failed = true;
            }
        }
    }
}

fn lua_error(err: LuaError) -> ConfigError {
    ConfigError {
        file: err.file,
        line: err.line,
        column: None,
        path: err.yaml_path,
        message: format!("lua: {}", err.message),
    }
}

/// A Lua result as a document node placed at the tag's position, so the
/// decoder's errors point at the `!lua` block that produced it.
fn node_from_lua(value: Value, mark: Mark) -> Result<Node, String> {
    let value = match value {
        Value::Null => NodeValue::Null,
        Value::Bool(b) => NodeValue::Scalar {
            text: b.to_string(),
            style: ScalarStyle::Plain,
        },
        Value::Number(n) => NodeValue::Scalar {
            text: n.to_string(),
            style: ScalarStyle::Plain,
        },
        Value::String(text) => NodeValue::Scalar {
            text,
            style: ScalarStyle::Quoted,
        },
        Value::Sequence(items) => NodeValue::Seq(
            items
                .into_iter()
                .map(|item| node_from_lua(item, mark))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => NodeValue::Map(
            map.into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Value::String(key) => key,
                        Value::Number(n) => n.to_string(),
                        other => {
                            return Err(format!(
                                "Lua returned a table with a non-string key {other:?}"
                            ))
                        }
                    };
                    Ok(Entry {
                        key,
                        key_mark: mark,
                        value: node_from_lua(value, mark)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        Value::Tagged(tagged) => {
            return Err(format!("Lua returned a tagged value `{}`", tagged.tag));
        }
    };
    Ok(Node {
        value,
        mark,
        tag: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_results_become_nodes_typed_like_yaml() {
        let value: Value = serde_yaml::from_str("{argv: [node, 8080, true], port: 8080}").unwrap();
        let mark = Mark { line: 7, column: 3 };
        let node = node_from_lua(value, mark).unwrap();
        let NodeValue::Map(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[0].key, "argv");
        assert_eq!(entries[1].value.mark, mark);
        assert_eq!(
            entries[1].value.value,
            NodeValue::Scalar {
                text: "8080".into(),
                style: ScalarStyle::Plain
            }
        );
        let NodeValue::Seq(items) = &entries[0].value.value else {
            panic!()
        };
        assert!(matches!(
            &items[0].value,
            NodeValue::Scalar { style: ScalarStyle::Quoted, text } if text == "node"
        ));
    }
}
