//! End-to-end tests of the runtime with the scripted mock LLM: one binary.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crash;
mod flow;
mod persistence;
mod recovery;
mod resilience;
mod support;
mod takeover;
