//! What an import did, for a person: each source entry and what it became,
//! notes on behaviour that changed, and every key left out with its
//! `file:line` and the reason. Printed to stderr so stdout can carry the
//! config (`-o -`).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where something was written in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
}

impl Loc {
    pub fn new(file: &Path, line: usize) -> Self {
        Self {
            file: file.to_owned(),
            line,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Each source entry (process, program, app, service) and what it became.
    pub entries: Vec<(Loc, String, String)>,
    /// Behaviour that was carried over with a difference worth knowing.
    pub notes: Vec<(Option<Loc>, String)>,
    /// Keys that were not carried over: where, which entry and key, why.
    pub dropped: Vec<(Loc, String, String)>,
}

impl Report {
    /// `what` (e.g. `program:web`) at `at` became `became`.
    pub fn entry(&mut self, at: Loc, what: impl Into<String>, became: impl Into<String>) {
        self.entries.push((at, what.into(), became.into()));
    }

    pub fn note(&mut self, at: Option<Loc>, text: impl Into<String>) {
        self.notes.push((at, text.into()));
    }

    /// `key` (named with its entry, e.g. `program:web stdout_logfile`) was
    /// left out because `why`.
    pub fn drop_key(&mut self, at: Loc, key: impl Into<String>, why: impl Into<String>) {
        self.dropped.push((at, key.into(), why.into()));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, what, became) in &self.entries {
            writeln!(f, "  {at}: {what} -> {became}")?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes:")?;
            for (at, text) in &self.notes {
                match at {
                    Some(at) => writeln!(f, "  {at}: {text}")?,
                    None => writeln!(f, "  {text}")?,
                }
            }
        }
        if self.dropped.is_empty() {
            writeln!(f, "every key was carried over")?;
        } else {
            writeln!(f, "not carried over:")?;
            for (at, key, why) in &self.dropped {
                writeln!(f, "  {at}: {key}: {why}")?;
            }
        }
        Ok(())
    }
}
