//! In-process test harness.
