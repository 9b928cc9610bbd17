//! # troupe-core
//!
//! The domain of Troupe, a multi-agent LLM orchestrator, with no HTTP, SQL or
//! Redis in it: the types every other crate speaks, the seam traits that
//! backends implement, and in-memory implementations of each seam.
//!
//! # Layout
//!
//! - [`ids`], [`role`], [`task`]: identifiers, worker roles, task and subtask records.
//! - [`plan`]: the plan an orchestrator's LLM writes, its JSON schema, lenient
//!   parsing and validation.
//! - [`ledger`]: the task ledger as a state machine with guarded, idempotent
//!   transitions, and the progress ledger's entries.
//! - [`envelope`]: the message envelope and its typed payloads.
//! - Seams, each a small trait with an in-memory implementation:
//!   [`llm::LlmProvider`], [`bus::Bus`] ([`bus::MemoryBus`]), and the stores
//!   [`store::TaskStore`] and [`store::ProgressStore`] ([`store::MemoryStore`]).

pub mod bus;
pub mod envelope;
pub mod ids;
pub mod ledger;
pub mod llm;
mod named;
pub mod plan;
pub mod role;
pub mod store;
pub mod task;
pub mod time;
mod url;

pub use ids::{AgentId, IdError, MessageId, SubtaskId, TaskId};
pub use role::{BuiltinRole, Role, RoleInfo};
pub use url::redact_url;
