//! The source files of YAML and JSON formats as one small tree whose nodes
//! know their line, so the report can point at every key it leaves out.
//!
//! YAML is read with `yaml-rust2`'s event parser (anchors copied in place,
//! `<<` merge keys applied); JSON and JSON5 with the `json5` crate through a
//! seed that records where each key sits in the text.

use std::collections::HashMap;
use std::fmt;

use anyhow::{bail, Result};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// One value of the source file; `line` is 1-based.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    /// Strings, numbers and booleans, as their text.
    Scalar(String),
    Seq(Vec<Value>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub line: usize,
    pub value: Value,
}

impl Value {
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(text) => Some(text),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.kind {
            Kind::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Value] {
        match &self.kind {
            Kind::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries()
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
            .filter(|v| v.kind != Kind::Null)
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, Kind::Map(_))
    }

    /// A short description for "expected ..., found ..." messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing".into(),
            Kind::Scalar(text) => format!("`{text}`"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A guard against alias bombs: far more nodes than any real stack needs.
const MAX_NODES: usize = 1_000_000;

/// Parses a YAML document. Errors carry the line.
pub fn parse_yaml(text: &str) -> Result<Value> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut root: Option<Value> = None;
    let mut nodes = 0usize;
    loop {
        let (event, marker) = match parser.next_token() {
            Ok(next) => next,
            Err(e) => bail!("line {}: invalid YAML: {}", e.marker().line(), e.info()),
        };
        let line = marker.line();
        let finished = match event {
            Event::StreamEnd => break,
            Event::Scalar(text, style, anchor, _) => {
                let plain_null = style == TScalarStyle::Plain
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let kind = if plain_null {
                    Kind::Null
                } else {
                    Kind::Scalar(text)
                };
                Some((Value { line, kind }, anchor))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(value) => {
                    nodes += count(value);
                    Some((value.clone(), 0))
                }
                None => bail!("line {line}: an alias refers to an unknown anchor"),
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    line,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    line,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = stack.pop().expect("an end event closes an open frame");
                Some(frame.finish()?)
            }
            _ => None,
        };
        let Some((value, anchor)) = finished else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            bail!(
                "line {line}: the document expands to more than {MAX_NODES} values (alias loop?)"
            );
        }
        if anchor != 0 {
            anchors.insert(anchor, value.clone());
        }
        match stack.last_mut() {
            Some(frame) => frame.push(value)?,
            None => {
                if root.is_some() {
                    bail!("line {line}: the file holds several YAML documents; expected one");
                }
                root = Some(value);
            }
        }
    }
    Ok(root.unwrap_or(Value {
        line: 1,
        kind: Kind::Null,
    }))
}

fn count(value: &Value) -> usize {
    1 + match &value.kind {
        Kind::Seq(items) => items.iter().map(count).sum(),
        Kind::Map(entries) => entries.iter().map(|e| count(&e.value)).sum(),
        _ => 0,
    }
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Value>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize)>,
    },
}

impl Frame {
    fn push(&mut self, value: Value) -> Result<()> {
        match self {
            Frame::Seq { items, .. } => items.push(value),
            Frame::Map { entries, key, .. } => match key.take() {
                None => {
                    let text = match value.kind {
                        Kind::Scalar(text) => text,
                        Kind::Null => String::new(),
                        _ => bail!("line {}: a mapping key must be plain text", value.line),
                    };
                    *key = Some((text, value.line));
                }
                Some((key, line)) => entries.push(Entry { key, line, value }),
            },
        }
        Ok(())
    }

    /// The finished node; a mapping gets its `<<` merges applied and its
    /// duplicate keys refused.
    fn finish(self) -> Result<(Value, usize)> {
        match self {
            Frame::Seq {
                line,
                anchor,
                items,
            } => Ok((
                Value {
                    line,
                    kind: Kind::Seq(items),
                },
                anchor,
            )),
            Frame::Map {
                line,
                anchor,
                entries,
                ..
            } => {
                let (merges, own): (Vec<Entry>, Vec<Entry>) =
                    entries.into_iter().partition(|e| e.key == "<<");
                let mut out: Vec<Entry> = Vec::with_capacity(own.len());
                for entry in own {
                    if out.iter().any(|e| e.key == entry.key) {
                        bail!(
                            "line {}: the key `{}` is written twice",
                            entry.line,
                            entry.key
                        );
                    }
                    out.push(entry);
                }
                for merge in merges {
                    let sources: Vec<Value> = match merge.value.kind {
                        Kind::Map(_) => vec![merge.value],
                        Kind::Seq(items) => items,
                        _ => bail!(
                            "line {}: `<<` merges a mapping or a list of mappings",
                            merge.line
                        ),
                    };
                    for source in sources {
                        let Kind::Map(entries) = source.kind else {
                            bail!(
                                "line {}: `<<` merges a mapping or a list of mappings",
                                merge.line
                            );
                        };
                        for entry in entries {
                            if !out.iter().any(|e| e.key == entry.key) {
                                out.push(entry);
                            }
                        }
                    }
                }
                Ok((
                    Value {
                        line,
                        kind: Kind::Map(out),
                    },
                    anchor,
                ))
            }
        }
    }
}

/// Parses JSON or JSON5 `part`, a slice of the file's `full` text (lines
/// count from the start of `full`). Errors carry the line.
pub fn parse_json5(full: &str, part: &str) -> Result<Value> {
    let mut deserializer = json5::Deserializer::from_str(part);
    let seed = TreeSeed {
        text: full,
        line: TreeSeed {
            text: full,
            line: 1,
        }
        .line_of(part)
        .unwrap_or(1),
    };
    let first_line = seed.line;
    let value = seed
        .deserialize(&mut deserializer)
        .map_err(|e| json_error(e, first_line))?;
    // Only comments and whitespace may follow.
    let trailing: Result<(), json5::Error> = json5::from_str::<IgnoredAny>(part).map(|_| ());
    trailing.map_err(|e| json_error(e, first_line))?;
    Ok(value)
}

fn json_error(error: json5::Error, first_line: usize) -> anyhow::Error {
    match (error.code(), error.position()) {
        (Some(code), Some(at)) => anyhow::anyhow!("line {}: {code}", first_line + at.line),
        // Our own messages already name their line.
        _ => {
            let text = error.to_string();
            let message = text.split(" at line ").next().unwrap_or(&text);
            anyhow::anyhow!("{message}")
        }
    }
}

/// Builds [`Value`]s; `line` is where the value's key was, the best place
/// known for it (json5 tells positions only through borrowed key text).
#[derive(Clone, Copy)]
struct TreeSeed<'t> {
    text: &'t str,
    line: usize,
}

impl TreeSeed<'_> {
    /// The line of `slice` if it points into the source text.
    fn line_of(&self, slice: &str) -> Option<usize> {
        let start = self.text.as_ptr() as usize;
        let at = slice.as_ptr() as usize;
        (at >= start && at <= start + self.text.len()).then(|| {
            1 + self.text.as_bytes()[..at - start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
        })
    }

    fn leaf(&self, kind: Kind) -> Value {
        Value {
            line: self.line,
            kind,
        }
    }
}

impl<'de, 't> DeserializeSeed<'de> for TreeSeed<'t> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 't> Visitor<'de> for TreeSeed<'t> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_string())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(self.leaf(Kind::Scalar(v.to_owned())))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(self.leaf(Kind::Null))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(self.leaf(Kind::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        let mut seed = self;
        while let Some(item) = seq.next_element_seed(seed)? {
            // The next item starts no earlier than this one's last key.
            seed.line = last_line(&item).max(seed.line);
            items.push(item);
        }
        Ok(self.leaf(Kind::Seq(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut line = self.line;
        let mut first_line = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(at) = key.borrowed.and_then(|slice| self.line_of(slice)) {
                line = at;
            }
            let key_line = line;
            first_line.get_or_insert(key_line);
            let value = map.next_value_seed(TreeSeed {
                text: self.text,
                line: key_line,
            })?;
            line = last_line(&value).max(key_line);
            if entries.iter().any(|e| e.key == key.text) {
                return Err(de::Error::custom(format!(
                    "line {key_line}: the key `{}` is written twice",
                    key.text
                )));
            }
            entries.push(Entry {
                key: key.text,
                line: key_line,
                value,
            });
        }
        Ok(Value {
            line: first_line.unwrap_or(self.line),
            kind: Kind::Map(entries),
        })
    }
}

/// The deepest line recorded inside `value`.
fn last_line(value: &Value) -> usize {
    match &value.kind {
        Kind::Seq(items) => items.iter().map(last_line).max().unwrap_or(value.line),
        Kind::Map(entries) => entries
            .iter()
            .map(|e| last_line(&e.value).max(e.line))
            .max()
            .unwrap_or(value.line),
        _ => value.line,
    }
}

struct Key<'de> {
    text: String,
    borrowed: Option<&'de str>,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key {
            text: v.to_owned(),
            borrowed: Some(v),
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key {
            text: v.to_owned(),
            borrowed: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_know_their_lines_and_merges_apply() {
        let doc = parse_yaml(
            "x-base: &base\n  restart: always\n  user: app\nservices:\n  web:\n    <<: *base\n    user: web\n    command: [a, b]\n",
        )
        .unwrap();
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("user").unwrap().scalar(), Some("web"));
        assert_eq!(web.get("restart").unwrap().scalar(), Some("always"));
        let command = web.entries().iter().find(|e| e.key == "command").unwrap();
        assert_eq!(command.line, 8);
        assert_eq!(web.get("command").unwrap().items().len(), 2);
    }

    #[test]
    fn yaml_duplicate_keys_are_refused_with_their_line() {
        let err = parse_yaml("a: 1\nb: 2\na: 3\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("`a`"), "{err}");
    }

    #[test]
    fn json5_keys_know_their_lines() {
        let text = "{\n  // comment\n  apps: [\n    {\n      name: 'api',\n      \"script\": \"server.js\",\n      watch: true,\n    },\n  ],\n}\n";
        let doc = parse_json5(text, text).unwrap();
        let app = &doc.get("apps").unwrap().items()[0];
        let lines: Vec<(String, usize)> = app
            .entries()
            .iter()
            .map(|e| (e.key.clone(), e.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("name".into(), 5),
                ("script".into(), 6),
                ("watch".into(), 7)
            ]
        );
        assert_eq!(app.get("watch").unwrap().scalar(), Some("true"));
    }
}
