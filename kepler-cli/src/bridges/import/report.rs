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

/// A note, with where it applies when it applies to one place.
type Note = (Option<Loc>, String);
/// A setting left out: where, which entry and key, why.
type Dropped = (Loc, String, String);

#[derive(Debug, Default)]
pub struct Report {
    /// Each source entry (process, program, app, service) and what it became.
    pub entries: Vec<(Loc, String, String)>,
    /// Behaviour that was carried over with a difference worth knowing.
    pub notes: Vec<Note>,
    /// Keys that were not carried over: where, which entry and key, why.
    pub dropped: Vec<Dropped>,
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

impl Report {
    /// Notes and dropped keys in file order: files as their entries first
    /// appear, then by line; notes about the whole file last.
    fn sorted(&self) -> (Vec<&Note>, Vec<&Dropped>) {
        let mut files: Vec<&Path> = Vec::new();
        let all_locs = self
            .entries
            .iter()
            .map(|(at, ..)| at)
            .chain(self.notes.iter().filter_map(|(at, _)| at.as_ref()))
            .chain(self.dropped.iter().map(|(at, ..)| at));
        for at in all_locs {
            if !files.contains(&at.file.as_path()) {
                files.push(&at.file);
            }
        }
        let rank = |at: &Loc| {
            (
                files
                    .iter()
                    .position(|f| *f == at.file)
                    .unwrap_or(usize::MAX),
                at.line,
            )
        };
        let mut notes: Vec<_> = self.notes.iter().collect();
        notes.sort_by_key(|(at, _)| at.as_ref().map_or((usize::MAX, 0), rank));
        let mut dropped: Vec<_> = self.dropped.iter().collect();
        dropped.sort_by_key(|(at, ..)| rank(at));
        (notes, dropped)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, what, became) in &self.entries {
            writeln!(f, "  {at}: {what} -> {became}")?;
        }
        let (notes, dropped) = self.sorted();
        if !notes.is_empty() {
            writeln!(f, "notes:")?;
            for (at, text) in notes {
                match at {
                    Some(at) => writeln!(f, "  {at}: {text}")?,
                    None => writeln!(f, "  {text}")?,
                }
            }
        }
        if dropped.is_empty() {
            writeln!(f, "every setting was carried over")?;
        } else {
            writeln!(f, "not carried over:")?;
            for (at, key, why) in dropped {
                writeln!(f, "  {at}: {key}: {why}")?;
            }
        }
        Ok(())
    }
}
