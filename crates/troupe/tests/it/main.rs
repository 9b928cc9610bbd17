//! End-to-end tests of the runtime with the scripted mock LLM: one binary.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crash;
mod faults;
mod flaky_runs;
mod flow;
mod messages;
mod persistence;
mod recovery;
mod replanning;
mod resilience;
mod support;
mod takeover;
