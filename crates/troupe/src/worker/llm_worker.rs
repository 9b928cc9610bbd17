//! [`LlmWorker`]: a worker that does its subtask by asking an LLM.

use std::sync::Arc;

use async_trait::async_trait;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider};
use troupe_core::role::RoleInfo;

use super::{Job, WorkError, WorkOutput, Worker, WorkerContext};
use crate::config::LlmCallConfig;
use crate::llm_call;
use crate::prompts::{DefaultPrompts, Prompts};

/// A worker that prompts an LLM with its role's system prompt, the subtask,
/// the facts and its dependencies' results (fitted into a character budget).
/// When the model says the prompt is too long, it halves the budget and asks again.
pub struct LlmWorker {
    llm: Arc<dyn LlmProvider>,
    config: LlmCallConfig,
    prompts: Arc<dyn Prompts>,
    system: String,
    budget: usize,
}

impl std::fmt::Debug for LlmWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmWorker")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl LlmWorker {
    /// A worker for `role` on `llm` with the default prompts, fitting
    /// dependency results into `budget` characters.
    pub fn new(
        llm: Arc<dyn LlmProvider>,
        role: &RoleInfo,
        config: LlmCallConfig,
        budget: usize,
    ) -> Self {
        Self::with_prompts(llm, role, config, budget, Arc::new(DefaultPrompts))
    }

    /// [`new`](Self::new), with its prompts from `prompts`.
    pub fn with_prompts(
        llm: Arc<dyn LlmProvider>,
        role: &RoleInfo,
        config: LlmCallConfig,
        budget: usize,
        prompts: Arc<dyn Prompts>,
    ) -> Self {
        Self {
            llm,
            config,
            system: prompts.worker_system(role),
            prompts,
            budget,
        }
    }
}

#[async_trait]
impl Worker for LlmWorker {
    async fn run(&self, job: &Job, _ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
        let build = |budget: usize| {
            let mut request = ChatRequest::new(
                CallKind::Work,
                vec![
                    ChatMessage::system(&self.system),
                    ChatMessage::user(self.prompts.worker_user(job, budget)),
                ],
            );
            request.temperature = self.config.temperature;
            request.max_tokens = self.config.max_tokens;
            request.meta.task_id = Some(job.task_id);
            request.meta.subtask_id = Some(job.subtask_id.clone());
            request.meta.role = Some(job.role.clone());
            request
        };
        let shrinkable = !job.dependencies.is_empty();
        let outcome = llm_call::call_shrinking(
            self.llm.as_ref(),
            &self.config,
            self.budget,
            shrinkable,
            build,
        )
        .await;
        match outcome.result {
            Ok(reply) if reply.content.trim().is_empty() => Err(WorkError {
                usage: reply.usage,
                ..WorkError::retryable("the model's reply was empty")
            }),
            Ok(reply) => Ok(WorkOutput {
                text: reply.content,
                usage: reply.usage,
            }),
            Err(e) => Err(WorkError::from(e)),
        }
    }
}
