//! Daemon lifecycle: start-up, serving, graceful shutdown.
