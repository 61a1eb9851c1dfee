//! The YAML document as a tree whose every node knows its line and column.
//!
//! `serde_yaml::Value` forgets positions, and good errors need them, so the
//! config is parsed once with `yaml-rust2`'s event parser into [`Node`]s that
//! carry their [`Mark`] and tag. Scalars stay text (plus how they were
//! quoted); the decoder gives them types. Aliases are copied in place, `<<`
//! merge keys are applied, and duplicate keys are reported.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based position in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_marker(marker: &Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    Quoted,
    /// `|` or `>`; the node's mark is the first line of the text itself.
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeTag {
    Lua,
    LuaFile,
    /// A YAML core tag like `!!str`, which changes nothing here except that
    /// `!!str` forces a string.
    Core(String),
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub mark: Mark,
    pub tag: Option<NodeTag>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Scalar { text: String, style: ScalarStyle },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_mark: Mark,
    pub value: Node,
}

impl Node {
    pub fn scalar(text: impl Into<String>, style: ScalarStyle, mark: Mark) -> Self {
        Self {
            value: NodeValue::Scalar {
                text: text.into(),
                style,
            },
            mark,
            tag: None,
        }
    }

    /// What a person would call this node's kind in "found ..." messages.
    pub fn describe(&self) -> String {
        match &self.value {
            NodeValue::Null => "nothing (null)".to_owned(),
            NodeValue::Scalar { text, .. } => {
                let short: String = text.chars().take(40).collect();
                let dots = if short.len() < text.len() { "..." } else { "" };
                format!("`{short}{dots}`")
            }
            NodeValue::Seq(_) => "a list".to_owned(),
            NodeValue::Map(_) => "a mapping".to_owned(),
        }
    }

    pub fn is_lua(&self) -> bool {
        matches!(self.tag, Some(NodeTag::Lua | NodeTag::LuaFile))
    }
}

/// A problem found while reading the document itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentProblem {
    pub mark: Mark,
    pub path: String,
    pub message: String,
}

/// The parsed document: the root node (if any) plus non-fatal problems such
/// as duplicate keys. A syntax error is fatal and returned alone.
#[derive(Debug)]
pub struct Document {
    pub root: Option<Node>,
    pub problems: Vec<DocumentProblem>,
    /// Whether any node carries a tag, so tag work is skipped otherwise.
    pub has_tags: bool,
    /// Whether any node is tagged `!lua` or `!lua_file`.
    pub has_lua: bool,
}

pub fn parse(text: &str) -> Result<Document, DocumentProblem> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, marker) = parser.next_token().map_err(|err| DocumentProblem {
            mark: Mark::from_marker(err.marker()),
            path: String::new(),
            message: format!("invalid YAML: {}", err.info()),
        })?;
        let mark = Mark::from_marker(&marker);
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                builder.documents += 1;
                if builder.documents > 1 {
                    return Err(DocumentProblem {
                        mark,
                        path: String::new(),
                        message:
                            "a config holds one YAML document; remove this `---` and what follows"
                                .to_owned(),
                    });
                }
            }
            Event::Alias(id) => {
                let anchored = builder.anchors.get(&id).ok_or(DocumentProblem {
                    mark,
                    path: String::new(),
                    message: "alias to an anchor that is not defined before it".to_owned(),
                })?;
                builder.alias_copies += size_of(anchored, ALIAS_BUDGET);
                if builder.alias_copies > ALIAS_BUDGET {
                    return Err(DocumentProblem {
                        mark,
                        path: String::new(),
                        message: format!(
                            "aliases here expand to more than {ALIAS_BUDGET} values; \
                             use fewer nested anchors"
                        ),
                    });
                }
                let node = anchored.clone();
                builder.finish_node(node, 0);
            }
            Event::Scalar(text, style, anchor, tag) => {
                let tag = builder.tag(tag);
                let style = match style {
                    TScalarStyle::Plain => ScalarStyle::Plain,
                    TScalarStyle::Literal | TScalarStyle::Folded => ScalarStyle::Block,
                    _ => ScalarStyle::Quoted,
                };
                let forced_string = matches!(&tag, Some(NodeTag::Core(t)) if t == "str");
                let is_null = style == ScalarStyle::Plain
                    && !forced_string
                    && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if is_null {
                    NodeValue::Null
                } else {
                    NodeValue::Scalar {
                        text,
                        style: if forced_string {
                            ScalarStyle::Quoted
                        } else {
                            style
                        },
                    }
                };
                builder.finish_node(Node { value, mark, tag }, anchor);
            }
            Event::SequenceStart(anchor, tag) => {
                builder.check_depth(mark)?;
                let tag = builder.tag(tag);
                builder.open(mark, tag, anchor, NodeValue::Seq(Vec::new()));
            }
            Event::MappingStart(anchor, tag) => {
                builder.check_depth(mark)?;
                let tag = builder.tag(tag);
                builder.open(mark, tag, anchor, NodeValue::Map(Vec::new()));
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(),
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
        }
    }
    Ok(Document {
        root: builder.root,
        problems: builder.problems,
        has_tags: builder.has_tags,
        has_lua: builder.has_lua,
    })
}

enum Segment {
    Root,
    Key(String),
    Index(usize),
}

struct OpenNode {
    node: Node,
    anchor: usize,
    segment: Segment,
    /// For a mapping: the key read, waiting for its value.
    pending_key: Option<(String, Mark)>,
}

/// Values that aliases may copy in, in all: beyond it, a few lines of
/// nested anchors could expand into gigabytes.
const ALIAS_BUDGET: usize = 100_000;
/// Deepest nesting of lists and mappings accepted; a config needs a handful,
/// and a pathological depth would exhaust the stack when the tree is dropped.
const MAX_DEPTH: usize = 64;

/// Number of values in `node`, counting at most up to `limit`.
fn size_of(node: &Node, limit: usize) -> usize {
    let mut count = 1;
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        if count > limit {
            break;
        }
        match &node.value {
            NodeValue::Seq(items) => {
                count += items.len();
                stack.extend(items.iter());
            }
            NodeValue::Map(entries) => {
                count += entries.len();
                stack.extend(entries.iter().map(|e| &e.value));
            }
            NodeValue::Null | NodeValue::Scalar { .. } => {}
        }
    }
    count
}

#[derive(Default)]
struct Builder {
    stack: Vec<OpenNode>,
    /// What aliases have copied in so far, against [`ALIAS_BUDGET`].
    alias_copies: usize,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    problems: Vec<DocumentProblem>,
    has_tags: bool,
    has_lua: bool,
    documents: usize,
}

impl Builder {
    /// Refuses to open a list or mapping deeper than [`MAX_DEPTH`].
    fn check_depth(&self, mark: Mark) -> Result<(), DocumentProblem> {
        if self.stack.len() < MAX_DEPTH {
            return Ok(());
        }
        Err(DocumentProblem {
            mark,
            path: String::new(),
            message: format!("lists and mappings are nested deeper than {MAX_DEPTH} levels"),
        })
    }

    fn tag(&mut self, tag: Option<Tag>) -> Option<NodeTag> {
        let tag = tag?;
        self.has_tags = true;
        Some(match (tag.handle.as_str(), tag.suffix.as_str()) {
            ("!", "lua") => {
                self.has_lua = true;
                NodeTag::Lua
            }
            ("!", "lua_file") => {
                self.has_lua = true;
                NodeTag::LuaFile
            }
            ("!!" | "tag:yaml.org,2002:", core) => NodeTag::Core(core.to_owned()),
            (handle, suffix) => NodeTag::Unknown(format!("{handle}{suffix}")),
        })
    }

    /// Where the node about to be added sits in the open collection.
    fn child_segment(&self) -> Segment {
        match self.stack.last() {
            None => Segment::Root,
            Some(open) => match (&open.node.value, &open.pending_key) {
                (NodeValue::Seq(items), _) => Segment::Index(items.len()),
                (_, Some((key, _))) => Segment::Key(key.clone()),
                (_, None) => Segment::Root,
            },
        }
    }

    /// The YAML path of the innermost open collection, built only when a
    /// problem needs it.
    fn open_path(&self) -> String {
        let mut path = String::new();
        for open in &self.stack {
            match &open.segment {
                Segment::Root => {}
                Segment::Index(index) => path.push_str(&format!("[{index}]")),
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
            }
        }
        path
    }

    fn open(&mut self, mark: Mark, tag: Option<NodeTag>, anchor: usize, value: NodeValue) {
        let segment = self.child_segment();
        self.stack.push(OpenNode {
            node: Node { value, mark, tag },
            anchor,
            segment,
            pending_key: None,
        });
    }

    fn close(&mut self) {
        let Some(open) = self.stack.last_mut() else {
            return;
        };
        let mut duplicates = Vec::new();
        if let NodeValue::Map(entries) = &mut open.node.value {
            apply_merge_keys(entries);
            duplicates = remove_duplicates(entries);
        }
        if !duplicates.is_empty() {
            let path = self.open_path();
            for (entry, first_line) in duplicates {
                self.problems.push(DocumentProblem {
                    mark: entry.key_mark,
                    path: if path.is_empty() {
                        entry.key.clone()
                    } else {
                        format!("{path}.{}", entry.key)
                    },
                    message: format!(
                        "duplicate key `{}`; it is already set on line {first_line}",
                        entry.key
                    ),
                });
            }
        }
        if let Some(open) = self.stack.pop() {
            self.finish_node(open.node, open.anchor);
        }
    }

    fn finish_node(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut parent.node.value {
            NodeValue::Seq(items) => items.push(node),
            NodeValue::Map(entries) => match parent.pending_key.take() {
                Some((key, key_mark)) => {
                    let mut value = node;
                    // A block list or mapping starts on the line below its
                    // key; errors about it as a whole read best at the key.
                    let is_collection =
                        matches!(value.value, NodeValue::Seq(_) | NodeValue::Map(_));
                    if is_collection && value.mark.line != key_mark.line {
                        value.mark = key_mark;
                    }
                    entries.push(Entry {
                        key,
                        key_mark,
                        value,
                    })
                }
                None => {
                    let key = match node.value {
                        NodeValue::Scalar { text, .. } => text,
                        NodeValue::Null => String::new(),
                        _ => {
                            let path = self.open_path();
                            self.problems.push(DocumentProblem {
                                mark: node.mark,
                                path,
                                message:
                                    "a mapping key must be a plain string, not a list or mapping"
                                        .to_owned(),
                            });
                            "?".to_owned()
                        }
                    };
                    if let Some(parent) = self.stack.last_mut() {
                        parent.pending_key = Some((key, node.mark));
                    }
                }
            },
            _ => {}
        }
    }
}

/// Removes repeated keys (the first one stays) and returns each removed
/// entry with the line of the key it repeats.
fn remove_duplicates(entries: &mut Vec<Entry>) -> Vec<(Entry, usize)> {
    let mut duplicates = Vec::new();
    if entries.len() <= 16 {
        // Small mappings (almost all of them): a scan beats hashing.
        for (index, entry) in entries.iter().enumerate() {
            if let Some(first) = entries[..index].iter().find(|e| e.key == entry.key) {
                duplicates.push((index, first.key_mark.line));
            }
        }
    } else {
        let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            match first_seen.get(entry.key.as_str()) {
                Some(&first) => duplicates.push((index, entries[first].key_mark.line)),
                None => {
                    first_seen.insert(&entry.key, index);
                }
            }
        }
    }
    let mut removed: Vec<(Entry, usize)> = duplicates
        .into_iter()
        .rev()
        .map(|(index, first_line)| (entries.remove(index), first_line))
        .collect();
    removed.reverse();
    removed
}

/// Applies YAML merge keys (`<<: *defaults` or `<<: [*a, *b]`): keys written
/// in the mapping win, then earlier merged mappings over later ones.
fn apply_merge_keys(entries: &mut Vec<Entry>) {
    let Some(index) = entries.iter().position(|e| e.key == "<<") else {
        return;
    };
    let merge = entries.remove(index);
    let sources: Vec<Node> = match merge.value.value {
        NodeValue::Map(_) => vec![merge.value],
        NodeValue::Seq(items) => items,
        _ => {
            // Not mergeable: keep it so the decoder reports an unknown key.
            entries.insert(index, merge);
            return;
        }
    };
    for source in sources {
        if let NodeValue::Map(source_entries) = source.value {
            for entry in source_entries {
                if !entries.iter().any(|e| e.key == entry.key) {
                    entries.push(entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().root.unwrap()
    }

    fn entries(node: &Node) -> &[Entry] {
        match &node.value {
            NodeValue::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn nodes_carry_one_based_lines_and_columns() {
        let doc = root("a:\n  b: 1\n  c: [x, \"y\"]\n");
        let b = &entries(&entries(&doc)[0].value)[0];
        assert_eq!(b.key_mark, Mark { line: 2, column: 3 });
        assert_eq!(b.value.mark, Mark { line: 2, column: 6 });
        let c = &entries(&entries(&doc)[0].value)[1].value;
        let NodeValue::Seq(items) = &c.value else {
            panic!()
        };
        assert_eq!(
            items[1].mark,
            Mark {
                line: 3,
                column: 10
            }
        );
        assert!(matches!(
            items[1].value,
            NodeValue::Scalar {
                style: ScalarStyle::Quoted,
                ..
            }
        ));
    }

    #[test]
    fn plain_null_forms_are_null_but_quoted_ones_are_strings() {
        let doc = root("a:\nb: ~\nc: 'null'\n");
        let e = entries(&doc);
        assert_eq!(e[0].value.value, NodeValue::Null);
        assert_eq!(e[1].value.value, NodeValue::Null);
        assert!(matches!(e[2].value.value, NodeValue::Scalar { .. }));
    }

    #[test]
    fn lua_tags_are_kept_and_block_scalars_are_marked_at_their_text() {
        let doc = parse("x: !lua |\n  return 1\ny: !lua_file gen.lua\n").unwrap();
        assert!(doc.has_tags && doc.has_lua);
        let root = doc.root.unwrap();
        let e = entries(&root);
        assert_eq!(e[0].value.tag, Some(NodeTag::Lua));
        assert_eq!(e[0].value.mark.line, 2);
        assert!(matches!(
            e[0].value.value,
            NodeValue::Scalar {
                style: ScalarStyle::Block,
                ..
            }
        ));
        assert_eq!(e[1].value.tag, Some(NodeTag::LuaFile));
    }

    #[test]
    fn aliases_copy_and_merge_keys_fill_missing_keys() {
        let doc = root("base: &b {x: 1, y: 2}\nsvc:\n  <<: *b\n  y: 3\n");
        let svc = entries(&entries(&doc)[1].value);
        let keys: Vec<_> = svc.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["y", "x"]);
        assert_eq!(
            svc[0].value.value,
            NodeValue::Scalar {
                text: "3".into(),
                style: ScalarStyle::Plain
            }
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_lines() {
        let doc = parse("services:\n  a: 1\n  a: 2\n").unwrap();
        assert_eq!(doc.problems.len(), 1);
        let problem = &doc.problems[0];
        assert_eq!(problem.mark.line, 3);
        assert_eq!(problem.path, "services.a");
        assert!(problem.message.contains("already set on line 2"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a:\n  b: [1, 2\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML"));
        assert!(err.mark.line >= 2);
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.mark.line, 2);
    }
}
