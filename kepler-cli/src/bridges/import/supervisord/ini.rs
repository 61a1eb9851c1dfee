//! Reading supervisord's INI files with the line of every key: sections,
//! `key = value` and `key: value`, indented continuation lines, inline
//! comments (` ;`, ` #`) and `[include]` globs, as supervisord reads them.
//!
//! `ini-roundtrip` yields exactly one item per line, which is what makes the
//! line numbers exact; the supervisord dialect is layered on top here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ini_roundtrip::{Item, Parser};

use super::super::report::Loc;

#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub at: Loc,
    pub keys: Vec<Key>,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub value: String,
    pub at: Loc,
}

impl Section {
    pub fn get(&self, name: &str) -> Option<&Key> {
        // A key written twice: the last one counts, as in supervisord.
        self.keys.iter().rev().find(|k| k.name == name)
    }
}

/// Nested includes deeper than this are a loop.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Reads `path` and every file its `[include]` sections name, in order.
pub fn read_with_includes(path: &Path) -> Result<Vec<Section>> {
    let mut sections = Vec::new();
    read_into(path, 0, &mut sections)?;
    Ok(sections)
}

fn read_into(path: &Path, depth: usize, out: &mut Vec<Section>) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        bail!(
            "{}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels; is there a loop?",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sections = parse(path, &text)?;
    for section in sections {
        let include = (section.name == "include").then(|| section.get("files").cloned());
        out.push(section);
        if let Some(files) = include.flatten() {
            for included in expand_globs(path, &files)? {
                read_into(&included, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

/// `files = conf.d/*.conf other.conf`: space-separated globs relative to
/// the including file's directory, each sorted.
fn expand_globs(including: &Path, files: &Key) -> Result<Vec<PathBuf>> {
    let dir = including.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for pattern in files.value.split_whitespace() {
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        let pattern_text = full.to_string_lossy();
        let matches = glob::glob(&pattern_text)
            .with_context(|| format!("{}: `{pattern}` is not a glob pattern", files.at))?;
        let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// One file's sections. Keys before any section are an error, as in
/// supervisord.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Section>> {
    let mut sections: Vec<Section> = Vec::new();
    let mut line = 0usize;
    // Whether the previous line was a key that a continuation may extend.
    let mut open_key = false;
    for item in Parser::new(text) {
        if matches!(item, Item::SectionEnd) {
            continue;
        }
        line += 1;
        let at = Loc::new(path, line);
        match item {
            Item::Section { name, .. } => {
                sections.push(Section {
                    name: name.to_owned(),
                    at,
                    keys: Vec::new(),
                });
                open_key = false;
            }
            Item::Error(raw) => bail!("{at}: `{raw}` is not a section header like [program:web]"),
            Item::Blank { .. } | Item::Comment { .. } => open_key = false,
            Item::Property { key, val, raw } => {
                let Some(section) = sections.last_mut() else {
                    bail!("{at}: `{raw}` comes before any [section]");
                };
                let continues = raw.starts_with([' ', '\t']);
                if continues && open_key {
                    if let Some(last) = section.keys.last_mut() {
                        last.value.push('\n');
                        last.value.push_str(&strip_comment(raw.trim()));
                    }
                    continue;
                }
                let (name, value) = match val {
                    Some(value) => (key, value),
                    // `key: value` is supervisord's other separator.
                    None => match key.split_once(':') {
                        Some((name, value)) => (name.trim_end(), value.trim_start()),
                        None => bail!("{at}: `{raw}` is not `key = value`"),
                    },
                };
                section.keys.push(Key {
                    name: name.to_ascii_lowercase(),
                    value: strip_comment(value),
                    at,
                });
                open_key = true;
            }
            Item::SectionEnd => {}
        }
    }
    Ok(sections)
}

/// Drops an inline comment: `;` or `#` after whitespace.
fn strip_comment(value: &str) -> String {
    let bytes = value.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        if (*byte == b';' || *byte == b'#') && index > 0 && bytes[index - 1].is_ascii_whitespace() {
            return value[..index].trim_end().to_owned();
        }
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_know_their_lines_and_continuations_join() {
        let text = "; top comment\n[program:web]\ncommand = /bin/web --port 80 ; inline\n\nenvironment=A=\"1\",\n  B=\"2\"\ndirectory: /srv\n";
        let sections = parse(Path::new("s.conf"), text).unwrap();
        assert_eq!(sections.len(), 1);
        let web = &sections[0];
        assert_eq!(web.name, "program:web");
        assert_eq!(web.at.line, 2);
        let command = web.get("command").unwrap();
        assert_eq!(command.value, "/bin/web --port 80");
        assert_eq!(command.at.line, 3);
        let env = web.get("environment").unwrap();
        assert_eq!(env.value, "A=\"1\",\nB=\"2\"");
        assert_eq!(env.at.line, 5);
        assert_eq!(web.get("directory").unwrap().value, "/srv");
        assert_eq!(web.get("directory").unwrap().at.line, 7);
    }

    #[test]
    fn a_key_before_any_section_is_refused() {
        let err = parse(Path::new("s.conf"), "command=x\n").unwrap_err();
        assert!(err.to_string().contains("s.conf:1"), "{err}");
    }
}
