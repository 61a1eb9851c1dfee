//! The Kepler daemon as a library: the binary in `main.rs` only parses its
//! arguments and calls [`daemon::run`]; the in-process tests in `kepler-tests`
//! drive the same code.

pub mod config;
pub mod daemon;
pub mod detach;
pub mod env;
pub mod health;
pub mod lua_eval;
pub mod process;
pub mod server;
pub mod state_dir;
pub mod user;
