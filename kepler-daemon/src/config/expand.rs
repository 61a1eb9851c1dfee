//! Shell-style variable expansion of config values at bake time.
//!
//! Supported forms: `${VAR}`, `${VAR:-default}`, `${VAR:+value}`, `$VAR`,
//! `$$` (a literal `$`) and a leading `~` (the captured `HOME`). Defaults and
//! alternatives may nest (`${A:-${B}}`). As in the shell, `:-` and `:+`
//! treat an empty variable like an unset one, and an unset variable expands
//! to nothing. A `$` not followed by `{`, `$` or a name start stays literal.

use std::collections::BTreeMap;

/// The longest text an expansion may produce: what the kernel accepts for
/// one argument or environment string (`MAX_ARG_STRLEN`). Nothing longer
/// can reach a process, and without a bound a few lines of
/// `B=${A}${A}`, `C=${B}${B}`, ... would double their way to gigabytes.
pub const MAX_EXPANDED_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "expands to more than {} KiB, more than the kernel passes to a process as one argument or environment variable; shorten it, or pass the data in a file",
        MAX_EXPANDED_BYTES / 1024
    )]
    TooLong,
    #[error("unterminated `${{` in `{0}`; close it with `}}` or write `$$` for a literal `$`")]
    Unterminated(String),
    #[error("bad substitution `{0}`; expected ${{VAR}}, ${{VAR:-default}} or ${{VAR:+value}}")]
    BadSubstitution(String),
    #[error("`~` needs HOME, which is not set in the captured system environment")]
    NoHome,
}

/// The variables visible to one expansion: maps searched from the last
/// (highest priority) to the first, plus the captured system `HOME` for `~`.
/// Layers are borrowed so a thousand services do not clone their maps.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    layers: Vec<&'a BTreeMap<String, String>>,
    home: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// A scope over the captured system environment, which also gives `~`.
    pub fn system(sys_env: &'a BTreeMap<String, String>) -> Self {
        Self {
            layers: vec![sys_env],
            home: sys_env.get("HOME").map(String::as_str),
        }
    }

    /// This scope with `layer` on top.
    pub fn with(&self, layer: &'a BTreeMap<String, String>) -> Self {
        let mut layers = self.layers.clone();
        layers.push(layer);
        Self {
            layers,
            home: self.home,
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.layers
            .iter()
            .rev()
            .find_map(|layer| layer.get(name))
            .map(String::as_str)
    }

    /// Expands `text`, including a leading `~`.
    pub fn expand(&self, text: &str) -> Result<String, ExpandError> {
        match text.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                let home = self.home.ok_or(ExpandError::NoHome)?;
                let mut out = home.to_owned();
                self.expand_into(rest, text, &mut out)?;
                Ok(out)
            }
            _ => {
                let mut out = String::with_capacity(text.len());
                self.expand_into(text, text, &mut out)?;
                Ok(out)
            }
        }
    }

    /// Expands `text` (a whole value or a nested default) onto `out`;
    /// `whole` is the full original value, for error messages.
    fn expand_into(&self, text: &str, whole: &str, out: &mut String) -> Result<(), ExpandError> {
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            // Checked before each step, so `out` never grows past the bound
            // by more than one value.
            if out.len() > MAX_EXPANDED_BYTES {
                return Err(ExpandError::TooLong);
            }
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('{') {
                let close = matching_brace(inner)
                    .ok_or_else(|| ExpandError::Unterminated(whole.to_owned()))?;
                self.substitute(&inner[..close], whole, out)?;
                rest = &inner[close + 1..];
            } else {
                let name_len = name_length(after);
                if name_len == 0 {
                    out.push('$');
                } else if let Some(value) = self.get(&after[..name_len]) {
                    out.push_str(value);
                }
                rest = &after[name_len..];
            }
        }
        out.push_str(rest);
        if out.len() > MAX_EXPANDED_BYTES {
            return Err(ExpandError::TooLong);
        }
        Ok(())
    }

    /// Handles the inside of one `${...}`.
    fn substitute(&self, body: &str, whole: &str, out: &mut String) -> Result<(), ExpandError> {
        let name_len = name_length(body);
        let bad = || ExpandError::BadSubstitution(format!("${{{body}}}"));
        if name_len == 0 {
            return Err(bad());
        }
        let value = self.get(&body[..name_len]).filter(|v| !v.is_empty());
        let operator = &body[name_len..];
        if operator.is_empty() {
            out.push_str(value.unwrap_or(""));
        } else if let Some(default) = operator.strip_prefix(":-") {
            match value {
                Some(value) => out.push_str(value),
                None => self.expand_into(default, whole, out)?,
            }
        } else if let Some(alternative) = operator.strip_prefix(":+") {
            if value.is_some() {
                self.expand_into(alternative, whole, out)?;
            }
        } else {
            return Err(bad());
        }
        Ok(())
    }
}

/// Length of the variable name at the start of `text` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes
        .first()
        .is_none_or(|b| !(b.is_ascii_alphabetic() || *b == b'_'))
    {
        return 0;
    }
    bytes
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(bytes.len())
}

/// Index of the `}` closing a `${` whose body starts `text`, skipping nested
/// `${...}` and `$$`.
fn matching_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expand(text: &str) -> Result<String, ExpandError> {
        let sys = map(&[("HOME", "/home/ada"), ("HOST", "db"), ("EMPTY", "")]);
        Scope::system(&sys).expand(text)
    }

    #[test]
    fn braced_and_bare_variables_expand() {
        assert_eq!(
            expand("postgres://${HOST}/app").unwrap(),
            "postgres://db/app"
        );
        assert_eq!(expand("$HOST:5432").unwrap(), "db:5432");
        assert_eq!(expand("${MISSING}x$MISSING").unwrap(), "x");
    }

    #[test]
    fn default_and_alternative_treat_empty_as_unset() {
        assert_eq!(expand("${HOST:-x}").unwrap(), "db");
        assert_eq!(expand("${MISSING:-x}").unwrap(), "x");
        assert_eq!(expand("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(expand("${HOST:+set}").unwrap(), "set");
        assert_eq!(expand("${MISSING:+set}").unwrap(), "");
        assert_eq!(expand("${EMPTY:+set}").unwrap(), "");
        assert_eq!(expand("[${EMPTY}]").unwrap(), "[]");
    }

    #[test]
    fn defaults_nest() {
        assert_eq!(expand("${A:-${HOST}}").unwrap(), "db");
        assert_eq!(expand("${A:-${B:-${HOST}-x}}").unwrap(), "db-x");
        assert_eq!(expand("${HOST:+${HOST}.local}").unwrap(), "db.local");
        assert_eq!(expand("${A:-a}b}").unwrap(), "ab}");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(expand("$$HOST").unwrap(), "$HOST");
        assert_eq!(expand("price: 5$").unwrap(), "price: 5$");
        assert_eq!(expand("a$-b").unwrap(), "a$-b");
        assert_eq!(expand("${A:-$$}").unwrap(), "$");
    }

    #[test]
    fn leading_tilde_is_the_captured_home() {
        assert_eq!(expand("~").unwrap(), "/home/ada");
        assert_eq!(expand("~/data/${HOST}").unwrap(), "/home/ada/data/db");
        assert_eq!(expand("~bob/x").unwrap(), "~bob/x");
        assert_eq!(expand("a/~").unwrap(), "a/~");
        let empty = BTreeMap::new();
        assert_eq!(
            Scope::system(&empty).expand("~/x"),
            Err(ExpandError::NoHome)
        );
    }

    #[test]
    fn malformed_substitutions_are_errors() {
        assert!(matches!(
            expand("${HOST"),
            Err(ExpandError::Unterminated(_))
        ));
        assert!(matches!(
            expand("${A:-${B}"),
            Err(ExpandError::Unterminated(_))
        ));
        assert!(matches!(
            expand("${}"),
            Err(ExpandError::BadSubstitution(_))
        ));
        assert!(matches!(
            expand("${A-b}"),
            Err(ExpandError::BadSubstitution(_))
        ));
        assert!(matches!(
            expand("${1A}"),
            Err(ExpandError::BadSubstitution(_))
        ));
    }

    #[test]
    fn an_expansion_stops_at_the_kernels_limit_for_one_string() {
        let half = "x".repeat(MAX_EXPANDED_BYTES / 2);
        let mut layer = map(&[("A", half.as_str())]);
        let sys = map(&[]);
        let scope = Scope::system(&sys);
        let twice = scope
            .with(&layer)
            .expand("${A}${A}")
            .expect("exactly at the limit");
        assert_eq!(twice.len(), MAX_EXPANDED_BYTES);
        assert_eq!(
            scope.with(&layer).expand("${A}${A}x"),
            Err(ExpandError::TooLong)
        );
        // A doubling chain stops at the first value past the limit, having
        // built nothing much larger than it.
        layer.insert("B".into(), twice);
        assert_eq!(
            scope
                .with(&layer)
                .expand("${B}${B}${B}${B}${B}${B}${B}${B}"),
            Err(ExpandError::TooLong)
        );
        assert_eq!(
            scope.with(&layer).expand("${NOPE:-${B}$B}"),
            Err(ExpandError::TooLong)
        );
    }

    #[test]
    fn higher_layers_shadow_lower_ones() {
        let sys = map(&[("A", "sys"), ("B", "sys")]);
        let file = map(&[("B", "file"), ("C", "file")]);
        let env = map(&[("C", "env")]);
        let scope = Scope::system(&sys).with(&file).with(&env);
        assert_eq!(scope.expand("$A $B $C").unwrap(), "sys file env");
    }
}
