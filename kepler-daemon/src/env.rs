//! Environment building: `sys_env` policy, `env_file`, `environment`, priority.
