//! # troupe
//!
//! Multi-agent LLM orchestration. Hand Troupe a goal; an orchestrator agent
//! asks an LLM to break it into a plan of subtasks for specialised workers
//! (researcher, coder, analyst, writer, reviewer, or your own), runs the plan
//! as a dependency graph with independent subtasks in parallel, keeps a task
//! ledger and a progress ledger, retries and re-plans around failures, and
//! writes one final answer. The design follows Microsoft's Magentic-One (task
//! ledger, progress ledger, stall counter, re-planning) with a parallel DAG.
//!
//! ```
//! use std::sync::Arc;
//! use troupe::Troupe;
//! use troupe_llm::mock::MockLlm;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let troupe = Troupe::builder().llm(Arc::new(MockLlm::builtin())).build().await.unwrap();
//! let task = troupe.run("Review this code for security bugs").await.unwrap();
//! println!("{}", task.result.unwrap_or_default());
//! troupe.shutdown().await;
//! # });
//! ```
//!
//! # Layout
//!
//! - [`Troupe`] and [`TroupeBuilder`] ([`runtime`]): assemble an LLM, a bus,
//!   stores and workers into a running process; submit goals.
//! - `orchestrator`: planning with repair, per-task drivers, the ledgers.
//! - [`worker`]: the [`Worker`](worker::Worker) trait, the built-in
//!   [`LlmWorker`](worker::LlmWorker), and the runner that serves a role's topic.
//! - [`config`]: one typed configuration tree; [`backoff`]: retry delays.
//! - `prompts`: every prompt sent; `llm_call`: timeouts and retries of LLM calls.
//! - [`core`]: the re-exported domain crate (`troupe-core`).

pub mod backoff;
pub mod config;
mod error;
pub mod events;
mod llm_call;
mod orchestrator;
pub mod prompts;
pub mod resilience;
pub mod runtime;
pub mod telemetry;
pub mod worker;

pub use troupe_core as core;

pub use config::TroupeConfig;
pub use error::TroupeError;
pub use events::TaskEvents;
pub use orchestrator::{TaskHandle, request_id};
pub use prompts::{DefaultPrompts, Prompts};
pub use runtime::{Troupe, TroupeBuilder};
