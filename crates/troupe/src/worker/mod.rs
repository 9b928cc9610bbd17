//! Workers: what does a subtask.
//!
//! A [`Worker`] gets a [`Job`] (its subtask, the goal, the facts and the
//! results of the subtasks it depends on) and returns a [`WorkOutput`] or a
//! [`WorkError`] that says whether another attempt may succeed. The five
//! built-in roles are served by [`LlmWorker`]; register your own with
//! [`TroupeBuilder::worker`](crate::TroupeBuilder::worker). The runner
//! (the `runner` module) takes jobs off the role's topic, reports progress, enforces the
//! deadline and publishes the outcome.

mod fn_worker;
mod llm_worker;
pub(crate) mod runner;
mod service;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use fn_worker::FnWorker;
pub use llm_worker::LlmWorker;
pub use service::WorkerService;
use troupe_core::bus::Bus;
use troupe_core::envelope::{DependencyResult, Envelope, MessageKind, Progress};
use troupe_core::llm::LlmError;
use troupe_core::task::Usage;
use troupe_core::{AgentId, Role, SubtaskId, TaskId};

/// One attempt at a subtask, as a worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The task.
    pub task_id: TaskId,
    /// The subtask.
    pub subtask_id: SubtaskId,
    /// Which attempt this is (from 1).
    pub attempt: u32,
    /// The task's goal.
    pub goal: String,
    /// The subtask's role.
    pub role: Role,
    /// Its title.
    pub title: String,
    /// What to do.
    pub instruction: String,
    /// Facts from the task ledger.
    pub facts: Vec<String>,
    /// Results of the subtasks it depends on.
    pub dependencies: Vec<DependencyResult>,
    /// How long the attempt may take.
    pub timeout: Duration,
}

/// A worker's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkOutput {
    /// The result.
    pub text: String,
    /// LLM tokens spent.
    pub usage: Usage,
}

impl WorkOutput {
    /// A result that cost no tokens.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            usage: Usage::default(),
        }
    }
}

/// A worker's failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct WorkError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// LLM tokens spent before failing.
    pub usage: Usage,
}

impl WorkError {
    /// A failure another attempt may overcome.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            usage: Usage::default(),
        }
    }

    /// A failure no attempt will overcome.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            usage: Usage::default(),
        }
    }
}

impl From<LlmError> for WorkError {
    fn from(e: LlmError) -> Self {
        Self {
            message: e.to_string(),
            retryable: e.is_retryable(),
            usage: Usage::default(),
        }
    }
}

/// What a worker can do while it works: tell the orchestrator how it goes.
#[derive(Clone)]
pub struct WorkerContext {
    agent: AgentId,
    bus: Arc<dyn Bus>,
    reply_to: String,
    orchestrator: AgentId,
    task_id: TaskId,
    subtask_id: SubtaskId,
    attempt: u32,
    request_id: Option<String>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("agent", &self.agent)
            .field("task_id", &self.task_id)
            .field("subtask_id", &self.subtask_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl WorkerContext {
    /// The worker's agent id.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// Sends a progress note to the orchestrator; it lands in the progress
    /// ledger. A note that cannot be sent is logged, never an error.
    pub async fn progress(&self, message: impl Into<String>) {
        let note = Progress::Note {
            message: message.into(),
        };
        if let Err(e) = self.send(MessageKind::Progress, &note).await {
            tracing::warn!(error = %e, "could not send a progress note");
        }
    }

    pub(crate) async fn send<P: serde::Serialize>(
        &self,
        kind: MessageKind,
        payload: &P,
    ) -> Result<(), String> {
        let envelope = Envelope::new(
            kind,
            self.agent.clone(),
            self.orchestrator.to_string(),
            payload,
        )
        .map_err(|e| e.to_string())?
        .about(self.task_id, &self.subtask_id, self.attempt)
        .with_request_id(self.request_id.clone());
        self.bus
            .publish(&self.reply_to, envelope)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Does subtasks of one role.
///
/// Return [`WorkError::retryable`] for failures another attempt may
/// overcome (a flaky API) and [`WorkError::permanent`] for the rest; the
/// orchestrator retries the former with backoff and re-plans around the latter.
///
/// ```
/// use async_trait::async_trait;
/// use troupe::worker::{Job, WorkError, WorkOutput, Worker, WorkerContext};
///
/// /// Counts the words of every dependency's result.
/// struct WordCounter;
///
/// #[async_trait]
/// impl Worker for WordCounter {
///     async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
///         if job.dependencies.is_empty() {
///             return Err(WorkError::permanent("nothing to count: no dependencies"));
///         }
///         ctx.progress(format!("counting {} results", job.dependencies.len())).await;
///         let words: usize = job.dependencies.iter().map(|d| d.result.split_whitespace().count()).sum();
///         Ok(WorkOutput::text(format!("{words} words")))
///     }
/// }
/// ```
#[async_trait]
pub trait Worker: Send + Sync {
    /// Does one attempt at a subtask.
    async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError>;
}

#[async_trait]
impl<W: Worker + ?Sized> Worker for Arc<W> {
    async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
        (**self).run(job, ctx).await
    }
}
