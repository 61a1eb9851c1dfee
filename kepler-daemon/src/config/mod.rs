//! The config model of `kepler.yaml`: parsing, validation, variable
//! expansion, Lua substitution and baking into an immutable snapshot.
//!
//! [`bake`] is the entry point: it reads a config with the environment the
//! CLI captured and returns either a [`Baked`] snapshot or every error in the
//! file ([`ConfigErrors`], one `file:line:column: path: message` per line).
//! The snapshot ([`BakedConfig`]) is what the daemon runs from; it stores it
//! as JSON ([`snapshot_to_json`] / [`snapshot_from_json`], which checks it
//! again with [`check_snapshot`]) and renders it as YAML for people
//! ([`render_snapshot`]).
//!
//! Module map: `document` (YAML with positions) -> `lua_stage` (tags) ->
//! `decode` + `service`/`global`/`hooks`/`dependency`/`healthcheck`/`logs`/
//! `environment` (typed reading, expansion) -> `validate` (whole-config
//! checks) -> `snapshot` (the result) with `graph` (its dependency queries);
//! `view` renders the snapshot as the JSON `kepler export` reads;
//! `snapshot_check` checks a snapshot that came from elsewhere.

mod bake;
mod decode;
mod dependency;
pub mod document;
mod environment;
pub mod error;
pub mod expand;
mod global;
mod graph;
mod healthcheck;
mod hooks;
mod logs;
mod lua_stage;
pub mod metrics;
mod service;
pub mod snapshot;
pub mod snapshot_check;
mod validate;
pub mod values;
mod view;

pub use bake::{bake, bake_source, Baked, EnvFileCopy};
pub use error::{ConfigError, ConfigErrors};
pub use metrics::MetricsConfig;
pub use snapshot::{
    load_snapshot, render_snapshot, snapshot_from_json, snapshot_to_json, BakedConfig,
    DependencyCondition, DependencyEdge, GlobalConfig, GlobalHookKind, HealthProbe, Healthcheck,
    HookAction, HookConfig, Limits, LogConfig, LogRetention, LogStore, RestartConfig,
    RestartPolicy, Retention, ServiceConfig, ServiceHookKind, SnapshotError,
};
pub use snapshot_check::{
    check_snapshot, SnapshotProblems, MAX_INSTANCES, MAX_SERVICES, MAX_SNAPSHOT_BYTES,
};
pub use values::{
    ByteSize, CpuCount, ExitCodeFilter, GroupSpec, HumanDuration, StopSignal, Umask, UserSpec,
    DEFAULT_UMASK,
};
pub use view::config_view;
