//! Which config file a command is about: `-f FILE`, else `kepler.yaml`, else
//! `kepler.yml` in the current directory. The daemon gets the canonical path;
//! requests that may bake the config (start, restart, recreate) also carry
//! the CLI's environment, and only those.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kepler_protocol::{check_sys_env, ConfigRef, SysEnv};

/// File names looked for in the current directory, in order.
const DEFAULT_NAMES: [&str; 2] = ["kepler.yaml", "kepler.yml"];

/// The config file's canonical path, from `-f` or the current directory.
pub fn find_config(file: Option<&Path>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    find_config_in(file, &cwd)
}

/// [`find_config`] relative to `dir` instead of the current directory.
pub fn find_config_in(file: Option<&Path>, dir: &Path) -> Result<PathBuf> {
    let path = match file {
        Some(file) => dir.join(file),
        None => match DEFAULT_NAMES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.exists())
        {
            Some(path) => path,
            None => bail!(
                "no kepler.yaml or kepler.yml in {}; create one or pass -f FILE",
                dir.display()
            ),
        },
    };
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot open the config file {}", path.display()))?;
    if !canonical.is_file() {
        bail!(
            "{} is not a file; pass the config file with -f FILE",
            path.display()
        );
    }
    Ok(canonical)
}

/// The request's view of the config: its path.
pub fn config_ref(file: Option<&Path>) -> Result<ConfigRef> {
    Ok(ConfigRef {
        path: find_config(file)?,
    })
}

/// The CLI's environment, for a request that may bake the config; variables
/// that are not UTF-8 cannot be expanded into a config, so they are left
/// out. Refused here, before anything is sent, past the daemon's bounds.
pub fn sys_env() -> Result<SysEnv> {
    let env: SysEnv = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    check_sys_env(&env).map_err(|e| anyhow!(e))?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn kepler_yml_is_found_when_it_is_the_only_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kepler.yml"), "services: {}\n").unwrap();
        let found = find_config_in(None, dir.path()).unwrap();
        assert_eq!(found, dir.path().canonicalize().unwrap().join("kepler.yml"));
    }

    #[test]
    fn kepler_yaml_wins_over_kepler_yml() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("kepler.yml"), "services: {}\n").unwrap();
        fs::write(dir.path().join("kepler.yaml"), "services: {}\n").unwrap();
        let found = find_config_in(None, dir.path()).unwrap();
        assert_eq!(found.file_name().unwrap(), "kepler.yaml");
    }

    #[test]
    fn a_directory_without_a_config_is_an_error_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_config_in(None, dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "no kepler.yaml or kepler.yml in {}; create one or pass -f FILE",
                dir.path().display()
            )
        );
    }

    #[test]
    fn file_is_taken_relative_to_the_directory_and_canonicalized() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/app.yaml"), "services: {}\n").unwrap();
        let found = find_config_in(Some(Path::new("sub/../sub/app.yaml")), dir.path()).unwrap();
        assert_eq!(
            found,
            dir.path().canonicalize().unwrap().join("sub/app.yaml")
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_config_in(Some(Path::new("nope.yaml")), dir.path()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("nope.yaml"), "{text}");
    }

    #[test]
    fn a_directory_given_as_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_config_in(Some(Path::new(".")), dir.path()).unwrap_err();
        assert!(err.to_string().contains("is not a file"), "{err}");
    }
}
