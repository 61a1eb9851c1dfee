//! What a watch looks at: the patterns of `restart.watch` made absolute,
//! the directories they need watched (each pattern's fixed base and how
//! deep below it), and the paths whose changes never count.
//!
//! Relative patterns are taken inside the service's working dir, so every
//! pattern ends up matched against absolute paths built from the watched
//! directories. `*`, `?` and `[..]` never cross a `/`; `**` spans any
//! number of directories; a trailing `/` means everything below.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{WatchError, WatchSpec};

/// Characters that make a path component a pattern rather than a name
/// (`\` too: an escaped name is rare, and watching from higher up is safe).
const GLOB_META: &[char] = &['*', '?', '[', '{', '\\'];

/// How many directory levels below a watched directory are watched too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Unlimited,
    /// `Levels(0)`: the directory's own entries only.
    Levels(u32),
}

impl Depth {
    /// The depth left for a subdirectory; `None` when it is not watched.
    pub fn below(self) -> Option<Depth> {
        match self {
            Depth::Unlimited => Some(Depth::Unlimited),
            Depth::Levels(0) => None,
            Depth::Levels(n) => Some(Depth::Levels(n - 1)),
        }
    }

    /// Whether watching this deep also covers `other`.
    pub fn covers(self, other: Depth) -> bool {
        match (self, other) {
            (Depth::Unlimited, _) => true,
            (Depth::Levels(_), Depth::Unlimited) => false,
            (Depth::Levels(a), Depth::Levels(b)) => a >= b,
        }
    }
}

/// A directory a pattern needs watched, and how deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRoot {
    /// The part of the pattern before its first wildcard.
    pub base: PathBuf,
    pub depth: Depth,
}

/// Decides which paths are changes the service cares about, and which
/// directories need watching for them.
pub struct ChangeFilter {
    patterns: GlobSet,
    ignored: Vec<PathBuf>,
    /// Distinct roots, none inside another that already covers it.
    pub roots: Vec<WatchRoot>,
}

impl ChangeFilter {
    pub fn new(spec: &WatchSpec) -> Result<ChangeFilter, WatchError> {
        let service = || spec.service.clone();
        if spec.patterns.is_empty() {
            return Err(WatchError::NoPatterns { service: service() });
        }
        if !spec.root.is_absolute() {
            return Err(WatchError::RelativeRoot {
                service: service(),
                path: spec.root.clone(),
            });
        }
        let root = normalize(&spec.root);
        let mut set = GlobSetBuilder::new();
        let mut roots = Vec::new();
        for pattern in &spec.patterns {
            let invalid = |source| WatchError::InvalidPattern {
                service: service(),
                pattern: pattern.clone(),
                source,
            };
            let (absolute, watch_root) = absolute_pattern(&root, pattern);
            let glob = GlobBuilder::new(&absolute)
                .literal_separator(true)
                .build()
                .map_err(invalid)?;
            set.add(glob);
            roots.push(watch_root);
        }
        let patterns = set.build().map_err(|source| WatchError::InvalidPattern {
            service: service(),
            pattern: spec.patterns.join(", "),
            source,
        })?;
        let mut ignored: Vec<PathBuf> = spec
            .ignore
            .iter()
            .map(|path| normalize(&root.join(path)))
            .collect();
        // A checkout rewrites .git wholesale; the worktree files it changes
        // are seen on their own.
        ignored.push(root.join(".git"));
        Ok(ChangeFilter {
            patterns,
            ignored,
            roots: distinct_roots(roots),
        })
    }

    /// Inside an ignored directory, or an ignored file itself.
    pub fn is_ignored(&self, path: &Path) -> bool {
        self.ignored.iter().any(|ignored| path.starts_with(ignored))
    }

    pub fn matches(&self, path: &Path) -> bool {
        !self.is_ignored(path) && self.patterns.is_match(path)
    }
}

/// `./src/*.rs` is `src/*.rs`; `assets/` means everything below `assets`.
pub fn normalize_pattern(pattern: &str) -> String {
    let mut pattern = pattern.trim();
    while let Some(rest) = pattern.strip_prefix("./") {
        pattern = rest.trim_start_matches('/');
    }
    if pattern.ends_with('/') {
        format!("{pattern}**")
    } else {
        pattern.to_owned()
    }
}

/// `a/./b/../c` is `a/c`, on the text alone.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// One component of an absolute pattern: its glob text, and its name when
/// it has no wildcard.
struct Part {
    glob: String,
    name: Option<String>,
}

/// The pattern as an absolute glob (a relative one is taken inside `root`,
/// whose characters are escaped), and the directory it needs watched.
fn absolute_pattern(root: &Path, pattern: &str) -> (String, WatchRoot) {
    let pattern = normalize_pattern(pattern);
    let mut parts: Vec<Part> = Vec::new();
    if !pattern.starts_with('/') {
        for component in root.components() {
            if let Component::Normal(name) = component {
                let name = name.to_string_lossy().into_owned();
                parts.push(Part {
                    glob: globset::escape(&name),
                    name: Some(name),
                });
            }
        }
    }
    let mut wildcard_seen = false;
    for text in pattern.split('/').filter(|c| !c.is_empty()) {
        match text {
            "." => continue,
            // `..` undoes a name; after a wildcard it is left to the glob.
            ".." if !wildcard_seen && !parts.is_empty() => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let wildcard = text.contains(GLOB_META);
        wildcard_seen |= wildcard;
        parts.push(Part {
            glob: text.to_owned(),
            name: (!wildcard).then(|| text.to_owned()),
        });
    }
    let glob = format!(
        "/{}",
        parts
            .iter()
            .map(|p| p.glob.as_str())
            .collect::<Vec<_>>()
            .join("/")
    );
    let fixed = parts.iter().take_while(|p| p.name.is_some()).count();
    let (base_parts, depth) = if fixed == parts.len() {
        // A plain path: watch the directory that holds it.
        (fixed.saturating_sub(1), Depth::Levels(0))
    } else {
        let rest = &parts[fixed..];
        let depth = if rest.iter().any(|p| p.glob.contains("**")) {
            Depth::Unlimited
        } else {
            Depth::Levels(rest.len() as u32 - 1)
        };
        (fixed, depth)
    };
    let mut base = PathBuf::from("/");
    for part in &parts[..base_parts] {
        base.push(part.name.as_deref().expect("fixed parts have names"));
    }
    (glob, WatchRoot { base, depth })
}

/// Drops roots that another root already covers (same directory or one
/// above it, watched deep enough), so no directory is walked twice.
fn distinct_roots(mut roots: Vec<WatchRoot>) -> Vec<WatchRoot> {
    // Shallow paths first, deepest watch first among equals.
    roots.sort_by(|a, b| {
        a.base
            .components()
            .count()
            .cmp(&b.base.components().count())
            .then_with(|| a.base.cmp(&b.base))
            .then_with(|| match (a.depth, b.depth) {
                (Depth::Unlimited, Depth::Unlimited) => std::cmp::Ordering::Equal,
                (Depth::Unlimited, _) => std::cmp::Ordering::Less,
                (_, Depth::Unlimited) => std::cmp::Ordering::Greater,
                (Depth::Levels(x), Depth::Levels(y)) => y.cmp(&x),
            })
    });
    let mut kept: Vec<WatchRoot> = Vec::new();
    for root in roots {
        let covered = kept.iter().any(|outer| {
            let Ok(inside) = root.base.strip_prefix(&outer.base) else {
                return false;
            };
            let levels = inside.components().count() as u32;
            let needed = match root.depth {
                Depth::Unlimited => Depth::Unlimited,
                Depth::Levels(n) => Depth::Levels(n + levels),
            };
            outer.depth.covers(needed)
        });
        if !covered {
            kept.push(root);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(root: &str, pattern: &str) -> (String, WatchRoot) {
        absolute_pattern(Path::new(root), pattern)
    }

    fn at(base: &str, depth: Depth) -> WatchRoot {
        WatchRoot {
            base: PathBuf::from(base),
            depth,
        }
    }

    #[test]
    fn patterns_are_normalised_relative_to_the_root() {
        assert_eq!(normalize_pattern("./src/*.rs"), "src/*.rs");
        assert_eq!(normalize_pattern("assets/"), "assets/**");
        assert_eq!(normalize_pattern("**/*.ts"), "**/*.ts");
        assert_eq!(normalize_pattern("/abs/dir/"), "/abs/dir/**");
        assert_eq!(normalize_pattern("src/*/"), "src/*/**");
    }

    #[test]
    fn each_pattern_is_watched_from_its_fixed_part_only_as_deep_as_it_reaches() {
        assert_eq!(
            root_of("/app", "src/**/*.rs"),
            ("/app/src/**/*.rs".into(), at("/app/src", Depth::Unlimited))
        );
        assert_eq!(root_of("/app", "*.json").1, at("/app", Depth::Levels(0)));
        assert_eq!(
            root_of("/app", "pkg/*/index.ts").1,
            at("/app/pkg", Depth::Levels(1))
        );
        assert_eq!(
            root_of("/app", "/srv/data/**/*.py"),
            (
                "/srv/data/**/*.py".into(),
                at("/srv/data", Depth::Unlimited)
            )
        );
        // A plain file: the directory holding it.
        assert_eq!(
            root_of("/app", "config/app.toml").1,
            at("/app/config", Depth::Levels(0))
        );
        assert_eq!(
            root_of("/app/web", "../shared/*.css"),
            (
                "/app/shared/*.css".into(),
                at("/app/shared", Depth::Levels(0))
            )
        );
    }

    #[test]
    fn wildcards_in_the_working_dir_are_taken_literally() {
        let (glob, root) = root_of("/srv/app[1]", "*.txt");
        assert_eq!(root, at("/srv/app[1]", Depth::Levels(0)));
        let set = GlobBuilder::new(&glob).build().unwrap().compile_matcher();
        assert!(set.is_match("/srv/app[1]/a.txt"));
        assert!(!set.is_match("/srv/app1/a.txt"));
    }

    #[test]
    fn nested_roots_are_watched_once() {
        let roots = distinct_roots(vec![
            at("/a/b", Depth::Levels(0)),
            at("/a", Depth::Unlimited),
            at("/c/d", Depth::Levels(1)),
            at("/c", Depth::Levels(1)),
            at("/c", Depth::Levels(2)),
        ]);
        assert_eq!(
            roots,
            [at("/a", Depth::Unlimited), at("/c", Depth::Levels(2))]
        );
        // /c/d two levels down needs /c three levels deep.
        let roots = distinct_roots(vec![
            at("/c", Depth::Levels(2)),
            at("/c/d", Depth::Levels(2)),
        ]);
        assert_eq!(roots.len(), 2);
    }
}
