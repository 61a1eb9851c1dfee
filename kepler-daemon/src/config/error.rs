//! Config errors located for a person: file, line, column, YAML path, and a
//! message saying what was found and what is allowed.

use std::fmt;
use std::path::{Path, PathBuf};

use super::document::Mark;

/// One problem in a config, rendered on one line as
/// `file:line:column: yaml.path: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as the caller named it (or a `!lua_file`, for Lua errors).
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// YAML path of the field, like `services.backend.depends_on.db.condition`;
    /// empty for problems with the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Collects errors while a config is read, so one run reports them all.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            errors: Vec::new(),
        }
    }

    pub fn at(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: Some(mark.line),
            column: Some(mark.column),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub fn file_error(&self, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigError {
            file: self.file.clone(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
        }])
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in file order; errors without a line (from other files)
    /// keep their relative order at the end.
    pub fn into_errors(mut self) -> ConfigErrors {
        self.errors
            .sort_by_key(|e| (e.line.is_none(), e.line.unwrap_or(0), e.column.unwrap_or(0)));
        ConfigErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_one_per_line_with_position_and_path() {
        let mut diag = Diagnostics::new(Path::new("kepler.yaml"));
        diag.at(
            Mark {
                line: 12,
                column: 9,
            },
            "services.backend.depends_on.db.condition",
            "unknown condition `service_ready`",
        );
        diag.at(Mark { line: 3, column: 1 }, "", "first");
        let rendered = diag.into_errors().to_string();
        assert_eq!(
            rendered,
            "kepler.yaml:3:1: first\n\
             kepler.yaml:12:9: services.backend.depends_on.db.condition: unknown condition `service_ready`"
        );
    }
}
