//! The state directory, its permissions, and the single-instance lock.
