//! Bounds on what a client may send, shared by both sides: the CLI checks
//! them before sending (so a person gets a clear message instead of a closed
//! connection), the daemon checks them again on arrival (a client is
//! hostile until proven otherwise).

use crate::SysEnv;

/// Most variables a request's environment may hold.
pub const MAX_SYS_ENV_VARS: usize = 4096;

/// Most bytes a request's environment may hold, counted as `execve` counts
/// them: `NAME=value` plus a terminating NUL per variable.
pub const MAX_SYS_ENV_BYTES: usize = 1024 * 1024;

/// Largest frame the daemon reads from a client (2 MiB). A legitimate request
/// is a path, a few names and at most [`MAX_SYS_ENV_BYTES`] of environment;
/// the general [`crate::MAX_FRAME_LEN`] (16 MiB) is for the daemon's answers,
/// whose log pages are large. A client sending more is cut off.
pub const MAX_REQUEST_LEN: usize = 2 * 1024 * 1024;

/// Longest `logs --grep` pattern, in bytes: a search is a line's worth of
/// pattern, not a program.
pub const MAX_GREP_LEN: usize = 4096;

/// Refuses a `--grep` pattern past [`MAX_GREP_LEN`].
pub fn check_grep(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_GREP_LEN {
        return Err(format!(
            "the --grep pattern is {} bytes long, more than the {MAX_GREP_LEN} kepler accepts",
            pattern.len()
        ));
    }
    Ok(())
}

/// The bytes `env` counts against [`MAX_SYS_ENV_BYTES`].
pub fn sys_env_bytes(env: &SysEnv) -> usize {
    env.iter()
        .map(|(name, value)| name.len() + value.len() + 2)
        .sum()
}

/// Refuses an environment past [`MAX_SYS_ENV_VARS`] or [`MAX_SYS_ENV_BYTES`],
/// saying which bound and by how much.
pub fn check_sys_env(env: &SysEnv) -> Result<(), String> {
    if env.len() > MAX_SYS_ENV_VARS {
        return Err(format!(
            "the environment has {} variables, more than the {MAX_SYS_ENV_VARS} kepler accepts \
             for baking a config; unset some (e.g. run with `env -i PATH=\"$PATH\" HOME=\"$HOME\" \
             kepler ...`)",
            env.len()
        ));
    }
    let bytes = sys_env_bytes(env);
    if bytes > MAX_SYS_ENV_BYTES {
        return Err(format!(
            "the environment is {bytes} bytes, more than the {MAX_SYS_ENV_BYTES} kepler accepts \
             for baking a config; unset the largest variables (e.g. run with `env -i \
             PATH=\"$PATH\" HOME=\"$HOME\" kepler ...`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_environment_passes() {
        let env: SysEnv = [("PATH", "/usr/bin"), ("HOME", "/root")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(sys_env_bytes(&env), "PATH=/usr/bin\0HOME=/root\0".len());
        assert!(check_sys_env(&env).is_ok());
    }

    #[test]
    fn too_many_variables_are_refused_naming_the_bound() {
        let env: SysEnv = (0..=MAX_SYS_ENV_VARS)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        let err = check_sys_env(&env).unwrap_err();
        assert!(err.contains("4097 variables"), "{err}");
        assert!(err.contains("4096"), "{err}");
    }

    #[test]
    fn too_many_bytes_are_refused_naming_the_bound() {
        let env: SysEnv = [("BIG".to_owned(), "x".repeat(MAX_SYS_ENV_BYTES))].into();
        let err = check_sys_env(&env).unwrap_err();
        assert!(err.contains(&format!("{}", MAX_SYS_ENV_BYTES)), "{err}");
        assert!(err.contains("bytes"), "{err}");
    }
}
