//! A block's Lua result as YAML.
//!
//! Tables whose keys are exactly 1..n become sequences (an empty table is an
//! empty sequence), all others mappings with string keys, sorted so a bake is
//! reproducible. The walk reads tables raw (no metamethods run) and is
//! bounded in depth, node count and string bytes: a script can build a small
//! Lua value that would expand to an enormous YAML tree (one table referenced
//! from everywhere), and the daemon's own memory is not under Lua's limit.

use std::ffi::c_void;

use mlua::{Table, Value};
use serde_yaml::{Mapping, Value as Yaml};

const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 250_000;
const MAX_STRING_BYTES: usize = 32 * 1024 * 1024;

pub(super) fn to_yaml(value: &Value, yaml_path: &str) -> Result<Yaml, String> {
    let mut converter = Converter {
        nodes_left: MAX_NODES,
        bytes_left: MAX_STRING_BYTES,
        open_tables: Vec::new(),
    };
    converter.convert(value, yaml_path)
}

struct Converter {
    nodes_left: usize,
    bytes_left: usize,
    /// Tables on the path from the root to the current value, to spot cycles.
    open_tables: Vec<*const c_void>,
}

/// A table key once converted: integers sort before strings, numerically.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Str(String),
}

impl Converter {
    fn convert(&mut self, value: &Value, path: &str) -> Result<Yaml, String> {
        self.nodes_left = self
            .nodes_left
            .checked_sub(1)
            .ok_or_else(|| format!("the result is too large (more than {MAX_NODES} values)"))?;
        match value {
            Value::Nil => Ok(Yaml::Null),
            Value::Boolean(b) => Ok(Yaml::Bool(*b)),
            Value::Integer(i) => Ok(Yaml::Number((*i).into())),
            Value::Number(n) => Ok(Yaml::Number((*n).into())),
            Value::String(s) => self.string(s, path).map(Yaml::String),
            Value::Table(table) => self.table(table, path),
            other => Err(format!(
                "`{path}` is a {}; a result may only hold strings, numbers, booleans, nil and tables",
                other.type_name()
            )),
        }
    }

    fn string(&mut self, s: &mlua::String, path: &str) -> Result<String, String> {
        let bytes = s.as_bytes();
        self.bytes_left = self.bytes_left.checked_sub(bytes.len()).ok_or_else(|| {
            format!("the result is too large (more than {MAX_STRING_BYTES} bytes of strings)")
        })?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("`{path}` is not valid UTF-8"))
    }

    fn table(&mut self, table: &Table, path: &str) -> Result<Yaml, String> {
        if self.open_tables.len() >= MAX_DEPTH {
            return Err(format!(
                "`{path}` is nested more than {MAX_DEPTH} levels deep"
            ));
        }
        let pointer = table.to_pointer();
        if self.open_tables.contains(&pointer) {
            return Err(format!("`{path}` contains itself"));
        }
        let mut entries = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            if entries.len() >= self.nodes_left {
                return Err(format!(
                    "the result is too large (more than {MAX_NODES} values)"
                ));
            }
            entries.push(pair.map_err(|err| err.to_string())?);
        }
        self.open_tables.push(pointer);
        let converted = if is_sequence(&entries) {
            self.sequence(entries, path)
        } else {
            self.mapping(entries, path)
        };
        self.open_tables.pop();
        converted
    }

    fn sequence(&mut self, mut entries: Vec<(Value, Value)>, path: &str) -> Result<Yaml, String> {
        entries.sort_by_key(|(key, _)| key.as_integer());
        let items = entries
            .iter()
            .enumerate()
            .map(|(index, (_, value))| self.convert(value, &format!("{path}[{index}]")))
            .collect::<Result<_, _>>()?;
        Ok(Yaml::Sequence(items))
    }

    fn mapping(&mut self, entries: Vec<(Value, Value)>, path: &str) -> Result<Yaml, String> {
        let mut keyed = entries
            .into_iter()
            .map(|(key, value)| Ok((self.key(&key, path)?, value)))
            .collect::<Result<Vec<_>, String>>()?;
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut mapping = Mapping::with_capacity(keyed.len());
        for (key, value) in keyed {
            let name = match key {
                Key::Int(i) => i.to_string(),
                Key::Str(s) => s,
            };
            let value = self.convert(&value, &format!("{path}.{name}"))?;
            if mapping.insert(Yaml::String(name.clone()), value).is_some() {
                return Err(format!(
                    "`{path}` has the key `{name}` twice (as a number and a string)"
                ));
            }
        }
        Ok(Yaml::Mapping(mapping))
    }

    fn key(&mut self, key: &Value, path: &str) -> Result<Key, String> {
        match key {
            Value::Integer(i) => Ok(Key::Int(*i)),
            Value::String(s) => self.string(s, path).map(Key::Str),
            Value::Number(n) => Err(format!(
                "`{path}` has the non-integer key {n}; mapping keys must be strings or integers"
            )),
            other => Err(format!(
                "`{path}` has a {} key; mapping keys must be strings or integers",
                other.type_name()
            )),
        }
    }
}

/// True when the keys are exactly the integers 1..=n (any order).
fn is_sequence(entries: &[(Value, Value)]) -> bool {
    let len = entries.len() as i64;
    entries
        .iter()
        .all(|(key, _)| matches!(key, Value::Integer(i) if (1..=len).contains(i)))
}
