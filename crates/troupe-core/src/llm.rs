//! The LLM seam: [`LlmProvider`], its request and response, and [`LlmError`],
//! which says what to do next.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{SubtaskId, TaskId};
use crate::role::Role;
use crate::task::Usage;

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions that frame the conversation.
    System,
    /// The caller.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: ChatRole,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::Assistant,
            content: content.into(),
        }
    }
}

/// The shape the reply must have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema. Providers enforce it where the server can; the
    /// caller validates the reply either way.
    JsonSchema {
        /// A name for the schema.
        name: String,
        /// The schema.
        schema: Value,
    },
}

/// What a call is for. Providers may use it for telemetry; the scripted mock uses it to choose its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// The orchestrator asks for a plan.
    Plan,
    /// The orchestrator asks for a new plan after failures.
    Replan,
    /// The orchestrator asks whether a stuck run is worth a new plan.
    Evaluate,
    /// A worker does a subtask.
    Work,
    /// The orchestrator writes the final answer.
    Synthesize,
    /// Anything else.
    Other,
}

impl CallKind {
    /// The kind's name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Plan => "plan",
            CallKind::Replan => "replan",
            CallKind::Evaluate => "evaluate",
            CallKind::Work => "work",
            CallKind::Synthesize => "synthesize",
            CallKind::Other => "other",
        }
    }
}

/// Context about a call: not sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMeta {
    /// What the call is for.
    pub kind: CallKind,
    /// The task, if any.
    pub task_id: Option<TaskId>,
    /// The subtask, if any.
    pub subtask_id: Option<SubtaskId>,
    /// The worker role making the call, if any.
    pub role: Option<Role>,
    /// The plan revision asked for (for plans and re-plans).
    pub revision: u32,
}

impl CallMeta {
    /// Metadata for a call of `kind` and nothing else.
    pub fn new(kind: CallKind) -> Self {
        Self {
            kind,
            task_id: None,
            subtask_id: None,
            role: None,
            revision: 0,
        }
    }
}

/// A chat-completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// The shape the reply must have.
    pub response_format: ResponseFormat,
    /// Sampling temperature, if not the provider's default.
    pub temperature: Option<f32>,
    /// The most tokens to generate, if not the provider's default.
    pub max_tokens: Option<u32>,
    /// What the call is for.
    pub meta: CallMeta,
}

impl ChatRequest {
    /// A request with `messages`, free-text output and provider defaults.
    pub fn new(kind: CallKind, messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            response_format: ResponseFormat::Text,
            temperature: None,
            max_tokens: None,
            meta: CallMeta::new(kind),
        }
    }

    /// The last user message, if any.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == ChatRole::User)
            .map(|m| m.content.as_str())
    }
}

/// A chat-completion response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The reply text.
    pub content: String,
    /// Tokens spent.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// Why the model stopped (`stop`, `length`), if the server said.
    pub finish_reason: Option<String>,
}

/// An LLM call that failed, classified by what the caller should do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// Too many requests: retry, after `retry_after` if the server said.
    #[error("the LLM provider is rate limiting (HTTP {status})")]
    RateLimited {
        /// The HTTP status (429).
        status: u16,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
        /// The raw response body, for diagnosis.
        body: String,
    },
    /// The server failed (5xx): retry with backoff.
    #[error("the LLM provider failed (HTTP {status})")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The raw response body.
        body: String,
    },
    /// No reply in time: retry with backoff.
    #[error("the LLM call timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed: retry with backoff.
    #[error("could not reach the LLM provider: {0}")]
    Transport(String),
    /// The prompt is longer than the model's context: shorten it, then retry.
    #[error("the prompt is too long for the model's context window (HTTP {status})")]
    ContextLength {
        /// The HTTP status (400 mostly; 200 when the error came in the body).
        status: u16,
        /// The raw response body.
        body: String,
    },
    /// The credentials were refused (401/403): do not retry.
    #[error("the LLM provider refused the credentials (HTTP {status}); check the API key")]
    Auth {
        /// The HTTP status.
        status: u16,
        /// The raw response body.
        body: String,
    },
    /// The request was refused as invalid (400, 404, 422): do not retry.
    #[error("the LLM provider rejected the request (HTTP {status}): {body}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// The raw response body.
        body: String,
    },
    /// The provider's circuit breaker is open after repeated failures: the
    /// call was not sent. Retry after `retry_in`, or use another provider.
    #[error(
        "the LLM provider {provider} is unavailable after repeated failures (circuit open; retry in {retry_in:?})"
    )]
    CircuitOpen {
        /// The provider.
        provider: String,
        /// When the breaker lets a trial call through.
        retry_in: Duration,
    },
    /// A 200 response that is not an answer (an error body, no content): retry.
    #[error("the LLM reply is unusable: {reason}")]
    InvalidResponse {
        /// What is wrong with it.
        reason: String,
        /// The raw response body.
        body: String,
    },
}

impl LlmError {
    /// Whether calling again (after a backoff) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout(_)
                | LlmError::Transport(_)
                | LlmError::InvalidResponse { .. }
                | LlmError::CircuitOpen { .. }
        )
    }

    /// How long the server asked to wait before the next call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            LlmError::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// A short, bounded name for the error class (for logs and metric labels).
    pub fn class(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server",
            LlmError::Timeout(_) => "timeout",
            LlmError::Transport(_) => "transport",
            LlmError::ContextLength { .. } => "context_length",
            LlmError::Auth { .. } => "auth",
            LlmError::BadRequest { .. } => "bad_request",
            LlmError::InvalidResponse { .. } => "invalid_response",
            LlmError::CircuitOpen { .. } => "circuit_open",
        }
    }
}

/// A chat model behind some API.
///
/// Implementations stay bare: retries, timeouts and rate limits are layered
/// around them by the runtime. Share one as `Arc<dyn LlmProvider>`.
///
/// ```
/// use async_trait::async_trait;
/// use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, ChatResponse, LlmError, LlmProvider};
/// use troupe_core::task::Usage;
///
/// /// Answers every request by shouting the last user message back.
/// struct Echo;
///
/// #[async_trait]
/// impl LlmProvider for Echo {
///     fn name(&self) -> &str {
///         "echo"
///     }
///
///     async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
///         let text = request.last_user_message().unwrap_or_default().to_uppercase();
///         Ok(ChatResponse { content: text, usage: Usage::default(), model: "echo".into(), finish_reason: None })
///     }
/// }
///
/// # tokio_test(async {
/// let reply = Echo.complete(ChatRequest::new(CallKind::Other, vec![ChatMessage::user("hi")])).await.unwrap();
/// assert_eq!(reply.content, "HI");
/// # });
/// # fn tokio_test(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// A short name for logs (`openai`, `mock`).
    fn name(&self) -> &str;

    /// The model requests go to, if the provider has one (for traces and metrics).
    fn model(&self) -> Option<&str> {
        None
    }

    /// Sends one chat-completion request.
    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError>;
}

#[async_trait]
impl<T: LlmProvider + ?Sized> LlmProvider for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn model(&self) -> Option<&str> {
        (**self).model()
    }

    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, LlmError> {
        (**self).complete(request).await
    }
}

/// What is known about a model that should shape how it is used, where the
/// user set nothing: a model on this machine's CPU is slow (longer
/// timeouts), a small one needs more tries for a valid plan, a known context
/// window bounds how much earlier work fits in a prompt. Each is a hint:
/// `None` says nothing, and a value the user configured always wins.
///
/// ```
/// use std::time::Duration;
/// use troupe_core::llm::ModelHints;
///
/// let hints = ModelHints { context_tokens: Some(8_192), ..ModelHints::default() };
/// assert_eq!(hints.call_timeout, None);
/// # let _ = Duration::ZERO;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelHints {
    /// The model's context per request, in tokens.
    pub context_tokens: Option<u32>,
    /// How long one call may take.
    pub call_timeout: Option<Duration>,
    /// How long a worker may take for one attempt at a subtask.
    pub subtask_timeout: Option<Duration>,
    /// Replies asked for one plan before giving up.
    pub plan_attempts: Option<u32>,
}

impl fmt::Debug for dyn LlmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LlmProvider({})", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_to_do_next() {
        let rate = LlmError::RateLimited {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            body: String::new(),
        };
        assert!(rate.is_retryable());
        assert_eq!(rate.retry_after(), Some(Duration::from_secs(2)));
        assert!(
            LlmError::Server {
                status: 503,
                body: String::new()
            }
            .is_retryable()
        );
        assert!(LlmError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(
            !LlmError::Auth {
                status: 401,
                body: String::new()
            }
            .is_retryable()
        );
        assert!(
            !LlmError::BadRequest {
                status: 400,
                body: String::new()
            }
            .is_retryable()
        );
        assert!(
            !LlmError::ContextLength {
                status: 400,
                body: String::new()
            }
            .is_retryable()
        );
        assert_eq!(LlmError::Transport("x".into()).class(), "transport");
    }
}
