//! The Kepler daemon as a library: the binary in `main.rs` only parses its
//! arguments and calls [`daemon::run`]; the in-process tests in `kepler-tests`
//! drive the same code.

pub mod config;
pub mod config_actor;
pub mod config_identity;
pub mod containment;
pub mod daemon;
pub mod deps;
pub mod detach;
pub mod env;
pub mod events;
pub mod exporter;
pub mod health;
pub mod hooks;
pub mod logs;
pub mod lua_eval;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod orchestrator;
pub mod persistence;
pub mod process;
pub mod registry;
pub mod run;
pub mod runtime_thread;
pub mod server;
pub mod state;
pub mod state_dir;
pub mod trusted_fs;
pub mod unprivileged_bake;
pub mod upgrade;
pub mod user;
pub mod watcher;
pub mod write_access;
