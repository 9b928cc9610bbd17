//! Conformance suites: every implementation of a seam runs the same checks.
//!
//! Each check asserts what a user of the seam relies on, makes its own topics
//! or tasks with fresh ids (so a shared Redis or PostgreSQL can be used), and
//! panics with the check's name when the implementation falls short.

pub mod bus;
pub mod store;
