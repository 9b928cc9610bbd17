//! LLM providers for Troupe.
//!
//! - [`OpenAiClient`]: a chat-completions client for any OpenAI-compatible
//!   endpoint (OpenAI, Ollama, vLLM, LM Studio, llama.cpp's `llama-server`). It
//!   asks for JSON-schema output where the server can ([`StructuredOutput`]),
//!   reads token usage from every response, and classifies every failure into an
//!   [`LlmError`](troupe_core::llm::LlmError) that says what to do next.
//! - [`LocalServer`]: the offline model, SmolLM2-135M-Instruct served by a
//!   `llama-server` that Troupe starts on a free loopback port and stops.
//! - `mock::MockLlm` (feature `mock`): a scripted, deterministic provider
//!   with error injection, for tests, demos and `troupe --llm mock`.
//!
//! # Layout
//! - `config`: [`OpenAiConfig`] (base URL, model, secret API key, timeouts,
//!   structured-output capability).
//! - `wire`: the chat-completions request and response bodies.
//! - `classify`: HTTP status, headers and body to an answer or a typed error.
//! - `client`: [`OpenAiClient`], the [`LlmProvider`](troupe_core::llm::LlmProvider).
//! - `local`: [`LocalServer`] and where the install script puts its files.
//! - `open`: [`open`], the provider an [`LlmSpec`] names (`openai`, a URL,
//!   `local`, `mock`), with the [`ModelHints`](troupe_core::llm::ModelHints)
//!   that say how to use it.
//! - `mock` (feature `mock`): the scripted mock.
//!
//! The client is bare: retries with backoff, shortening prompts after a
//! context-length error and re-asking for malformed JSON are done by the runtime
//! (`troupe`), around any provider.

mod classify;
mod client;
mod config;
mod local;
#[cfg(feature = "mock")]
pub mod mock;
mod open;
mod wire;

pub use client::{ClientError, OpenAiClient};
pub use config::{OPENAI_BASE_URL, OpenAiConfig, StructuredOutput};
pub use local::{
    LOCAL_MODEL_FILE, LOCAL_MODEL_NAME, LocalError, LocalModelConfig, LocalPaths, LocalServer,
};
pub use open::{
    DEFAULT_OPENAI_MODEL, LOCAL_CALL_TIMEOUT, LOCAL_PLAN_ATTEMPTS, LOCAL_SUBTASK_TIMEOUT, LlmSpec,
    OpenError, OpenOptions, OpenedLlm, open,
};
