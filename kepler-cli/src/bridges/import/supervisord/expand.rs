//! supervisord's `%(name)s` expansions (Python %-formatting of a mapping):
//! `%(program_name)s`, `%(process_num)02d`, `%(here)s`, `%(ENV_HOME)s`, `%%`.

use std::collections::HashMap;

use anyhow::{bail, Result};

/// What a `%(ENV_X)s` becomes: supervisord substitutes its own environment
/// when it starts, Kepler's closest equivalent depends on the field.
#[derive(Clone, Copy)]
pub enum EnvStyle {
    /// `${X}`, expanded by Kepler at bake time; literal `$` is doubled.
    Kepler,
    /// A marker (`\u{1}X\u{1}`) the command builder turns into a shell
    /// variable; literal text is left as is.
    Marker,
}

pub const MARKER: char = '\u{1}';

/// The shell variable `%(process_num)` becomes in the command of a program
/// with several processes (its value set to [`MARKER`] + this name): the
/// number is known only when the instance runs.
pub const PROCESS_NUM: &str = "PROCESS_NUM";

pub fn expand(text: &str, vars: &HashMap<&str, String>, env: EnvStyle) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        push_literal(&mut out, &rest[..at], env);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix('(') else {
            bail!("`%` must start an expansion like %(program_name)s or be written %%");
        };
        let Some(close) = body.find(')') else {
            bail!("`%(` is not closed");
        };
        let name = &body[..close];
        let spec_end = body[close + 1..]
            .find(|c: char| c.is_ascii_alphabetic())
            .map(|i| close + 1 + i)
            .ok_or_else(|| anyhow::anyhow!("`%({name})` needs a conversion like s or d"))?;
        let flags = &body[close + 1..spec_end];
        let conversion = &body[spec_end..spec_end + 1];
        rest = &body[spec_end + 1..];
        if let Some(variable) = name.strip_prefix("ENV_") {
            match env {
                EnvStyle::Kepler => out.push_str(&format!("${{{variable}}}")),
                EnvStyle::Marker => {
                    out.push(MARKER);
                    out.push_str(variable);
                    out.push(MARKER);
                }
            }
            continue;
        }
        let Some(value) = vars.get(name) else {
            let known: Vec<&str> = vars.keys().copied().collect();
            bail!(
                "`%({name})s` is not an expansion supervisord offers here (known: ENV_*, {})",
                known.join(", ")
            );
        };
        if let Some(variable) = value.strip_prefix(MARKER) {
            // A number known only at run time: a shell variable, one per
            // format (`%(process_num)02d` is PROCESS_NUM_02).
            let EnvStyle::Marker = env else {
                bail!(
                    "`%({name})` varies per process, which Kepler can express only in the command"
                );
            };
            if !flags.bytes().all(|b| b.is_ascii_digit()) || !matches!(conversion, "d" | "i" | "s")
            {
                bail!("`%({name}){flags}{conversion}` varies per process in a format Kepler cannot reproduce; use %({name})d");
            }
            out.push(MARKER);
            out.push_str(variable);
            if !flags.is_empty() {
                out.push('_');
                out.push_str(flags);
            }
            out.push(MARKER);
            continue;
        }
        let value = match conversion {
            "d" | "i" => {
                let number: i64 = value.parse().map_err(|_| {
                    anyhow::anyhow!("`%({name}){flags}d` needs a number, `{value}` is not")
                })?;
                let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0);
                if flags.starts_with('0') {
                    format!("{number:0width$}")
                } else {
                    format!("{number:width$}")
                }
            }
            "s" | "r" => value.clone(),
            other => {
                bail!("`%({name}){flags}{other}` uses a conversion supervisord configs do not use")
            }
        };
        push_literal(&mut out, &value, env);
    }
    push_literal(&mut out, rest, env);
    Ok(out)
}

fn push_literal(out: &mut String, text: &str, env: EnvStyle) {
    match env {
        EnvStyle::Kepler => out.push_str(&text.replace('$', "$$")),
        EnvStyle::Marker => out.push_str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<&'static str, String> {
        HashMap::from([
            ("program_name", "web".to_owned()),
            ("process_num", "3".to_owned()),
        ])
    }

    #[test]
    fn names_numbers_and_environment_expand() {
        assert_eq!(
            expand(
                "%(program_name)s_%(process_num)02d",
                &vars(),
                EnvStyle::Kepler
            )
            .unwrap(),
            "web_03"
        );
        assert_eq!(
            expand("%(ENV_HOME)s/x 100%% $5", &vars(), EnvStyle::Kepler).unwrap(),
            "${HOME}/x 100% $$5"
        );
        assert_eq!(
            expand("--home=%(ENV_HOME)s", &vars(), EnvStyle::Marker).unwrap(),
            "--home=\u{1}HOME\u{1}"
        );
    }

    #[test]
    fn unknown_expansions_are_refused() {
        let err = expand("%(nope)s", &vars(), EnvStyle::Kepler).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
