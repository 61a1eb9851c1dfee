//! The protocol server.
