//! # troupe-testkit
//!
//! What Troupe's tests (and yours) need to exercise it without a real model
//! or service:
//!
//! - [`mock::MockLlm`]: a scripted, deterministic LLM with error injection,
//!   also behind `troupe --llm mock` and `--llm mock:FILE`.
//! - [`conformance`]: the suites every [`Bus`](troupe_core::bus::Bus) and store
//!   implementation must pass.
//! - [`services`]: the local Redis and PostgreSQL tests use, or a skip.

pub mod conformance;
pub mod mock;
pub mod services;
