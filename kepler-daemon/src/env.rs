//! Environment building: the `sys_env` policy, `.env` files, and the
//! priority `environment` > `env_file` > system environment.
//!
//! The "system environment" is always the map the CLI captured and sent,
//! never this daemon's own `std::env`: a root daemon's variables must not
//! leak into services, and `$HOME` must be the user's, not root's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::expand::Scope;

pub type EnvMap = BTreeMap<String, String>;

/// Whether a process starts from the captured system environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SysEnvPolicy {
    /// Start empty: only `env_file` and `environment` reach the process.
    #[default]
    Clear,
    /// Start from the environment captured from the CLI at config load.
    Inherit,
}

impl SysEnvPolicy {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "clear" => Some(Self::Clear),
            "inherit" => Some(Self::Inherit),
            _ => None,
        }
    }
}

/// The environment a process starts with: the lowest layer first.
pub fn process_environment(
    policy: SysEnvPolicy,
    sys_env: &EnvMap,
    env_file: &EnvMap,
    environment: &EnvMap,
) -> EnvMap {
    let mut env = match policy {
        SysEnvPolicy::Clear => EnvMap::new(),
        SysEnvPolicy::Inherit => sys_env.clone(),
    };
    env.extend(env_file.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// A `.env` file that could not be read, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}

/// Parses `.env` text: `KEY=value` lines, optional `export `, `#` comments,
/// `'literal'` and `"escaped"` values (both may span lines), and unquoted
/// values ending at ` #`. Unquoted and double-quoted values are expanded
/// like config values, seeing `scope` and the file's earlier variables;
/// single-quoted ones are literal.
///
/// This is not `dotenvy`: its `$VAR` substitution reads the daemon's own
/// `std::env` first, which would leak root's environment into services.
pub fn parse_dotenv(text: &str, scope: &Scope<'_>) -> Result<EnvMap, DotenvError> {
    let mut vars = EnvMap::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, raw_line)) = lines.next() {
        let line_number = index + 1;
        let err = |message: String| DotenvError {
            line: line_number,
            message,
        };
        let line = raw_line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!(
                "expected KEY=value, found `{}`",
                raw_line.trim()
            )));
        };
        let key = key.trim_end();
        if !is_variable_name(key) {
            return Err(err(format!(
                "`{key}` is not a variable name (letters, digits, `_` and `.`, not starting with a digit)"
            )));
        }
        let value = value.trim_start();
        let parsed = match value.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                // Quoted values may continue on the following lines.
                let mut body = value[1..].to_owned();
                let close = loop {
                    if let Some(close) = closing_quote(&body, quote) {
                        break close;
                    }
                    match lines.next() {
                        Some((_, next)) => {
                            body.push('\n');
                            body.push_str(next);
                        }
                        None => return Err(err(format!("the value's {quote} is never closed"))),
                    }
                };
                let after = body[close + 1..].trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(err(format!(
                        "unexpected `{after}` after the closing {quote}"
                    )));
                }
                let inner = &body[..close];
                if quote == '\'' {
                    inner.to_owned()
                } else {
                    let layered = scope.with(&vars);
                    layered
                        .expand(&unescape_double_quoted(inner))
                        .map_err(|e| err(e.to_string()))?
                }
            }
            _ => {
                let unquoted = match value.find(" #").or_else(|| value.find("\t#")) {
                    Some(comment) => &value[..comment],
                    None => value,
                };
                let layered = scope.with(&vars);
                layered
                    .expand(unquoted.trim_end())
                    .map_err(|e| err(e.to_string()))?
            }
        };
        vars.insert(key.to_owned(), parsed);
    }
    Ok(vars)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Index of the quote closing a value whose body is `body`; in double quotes
/// a backslash escapes the next character.
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(index),
            _ => {}
        }
    }
    None
}

/// Resolves `\n`, `\t`, `\"`, `\\` and `\$`; the result is expansion input,
/// so an escaped dollar becomes `$$`.
fn unescape_double_quoted(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('$') => out.push_str("$$"),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_beats_env_file_beats_inherited_system_env() {
        let sys = map(&[("A", "sys"), ("B", "sys"), ("C", "sys")]);
        let file = map(&[("B", "file"), ("C", "file")]);
        let env = map(&[("C", "env")]);
        let merged = process_environment(SysEnvPolicy::Inherit, &sys, &file, &env);
        assert_eq!(merged, map(&[("A", "sys"), ("B", "file"), ("C", "env")]));
    }

    #[test]
    fn clear_policy_passes_no_system_variable() {
        let sys = map(&[("SECRET", "x"), ("PATH", "/bin")]);
        let env = map(&[("NODE_ENV", "production")]);
        let merged = process_environment(SysEnvPolicy::Clear, &sys, &EnvMap::new(), &env);
        assert_eq!(merged, env);
    }

    #[test]
    fn dotenv_reads_plain_quoted_exported_and_commented_lines() {
        let text = "# a comment\n\
                    \n\
                    PLAIN=hello world # trailing comment\n\
                    export EXPORTED = yes\n\
                    SINGLE='literal $HOME #not comment'\n\
                    DOUBLE=\"line1\\nline2 \\\"q\\\" \\$HOME\"\n\
                    EMPTY=\n\
                    MULTI='a\n\
                    b'\n";
        let sys = map(&[("HOME", "/home/ada")]);
        let vars = parse_dotenv(text, &Scope::system(&sys)).unwrap();
        assert_eq!(vars["PLAIN"], "hello world");
        assert_eq!(vars["EXPORTED"], "yes");
        assert_eq!(vars["SINGLE"], "literal $HOME #not comment");
        assert_eq!(vars["DOUBLE"], "line1\nline2 \"q\" $HOME");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(vars["MULTI"], "a\nb");
    }

    #[test]
    fn dotenv_expands_from_system_env_and_earlier_lines_only() {
        // A variable of this test process's own environment must not leak.
        let text = "BASE=${HOME}/app\nDATA=$BASE/data\nLEAK=[${PATH}]\n";
        let sys = map(&[("HOME", "/home/ada")]);
        let vars = parse_dotenv(text, &Scope::system(&sys)).unwrap();
        assert_eq!(vars["DATA"], "/home/ada/app/data");
        assert_eq!(vars["LEAK"], "[]");
        assert!(std::env::var_os("PATH").is_some());
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        let sys = EnvMap::new();
        let scope = Scope::system(&sys);
        let err = parse_dotenv("A=1\nnot a pair\n", &scope).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("expected KEY=value"));
        let err = parse_dotenv("A='open\n", &scope).unwrap_err();
        assert!(err.message.contains("never closed"));
        let err = parse_dotenv("1A=x\n", &scope).unwrap_err();
        assert!(err.message.contains("not a variable name"));
        let err = parse_dotenv("A=${B\n", &scope).unwrap_err();
        assert!(err.message.contains("unterminated"));
    }
}
