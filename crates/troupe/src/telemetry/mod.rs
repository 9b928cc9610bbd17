//! What the runtime tells operators, through facades only: metrics through
//! the [`metrics`](::metrics) crate, spans and events through [`tracing`], and
//! W3C trace context (through OpenTelemetry's global propagator) in every
//! envelope, so that a worker's span is a child of the orchestrator's dispatch
//! span even in another process.
//!
//! The library installs no recorder and no subscriber: a binary does (the
//! `troupe` command exports Prometheus text and OTLP). Without them the calls
//! here cost next to nothing.
//!
//! Spans: `task` (one root per task, with `request_id` and `task_id`),
//! `subtask.dispatch` (one per attempt, from dispatch to its outcome),
//! `subtask.run` (the worker's side, parented on the dispatch span through
//! the envelope), `gen_ai.chat` (one per LLM request, with the `gen_ai.*`
//! attributes), `bus.send` and `bus.receive`.

pub(crate) mod events;
pub mod metrics;
mod observed_bus;
pub(crate) mod propagation;

pub use observed_bus::ObservedBus;
