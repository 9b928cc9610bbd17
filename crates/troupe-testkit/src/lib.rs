//! # troupe-testkit
//!
//! What Troupe's tests (and yours) need to check an implementation of a seam
//! or to reach a real service:
//!
//! - [`conformance`]: the suites every [`Bus`](troupe_core::bus::Bus) and store
//!   implementation must pass.
//! - [`services`]: the local Redis and PostgreSQL tests use, or a skip.
//! - [`eventually`]: waiting for a condition instead of sleeping.
//!
//! The scripted mock LLM lives in `troupe-llm` behind its `mock` feature
//! (`troupe_llm::mock::MockLlm`), so that `troupe --llm mock` needs no test code.

pub mod conformance;
mod eventually;
pub mod services;

pub use eventually::{eventually, eventually_blocking, eventually_blocking_explained};
