//! Asking the LLM for JSON of a schema until a reply validates, a bounded
//! number of times: the loop behind plans and progress evaluations.
//!
//! The schema is sent as the request's `response_format` (providers enforce it
//! where the server can) and every reply is validated anyway. A rejected reply
//! stays in the conversation, followed by the list of problems, so the model
//! can repair its own answer. LLM errors are retried by
//! [`llm_call`](crate::llm_call); past the bounds the ask fails with a reason a
//! user can read.

use serde_json::Value;
use troupe_core::TaskId;
use troupe_core::ledger::EventKind;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider, ResponseFormat};
use troupe_core::plan::PlanRejection;
use troupe_core::task::Usage;

use super::recorder::Notes;
use crate::config::TroupeConfig;
use crate::llm_call;
use crate::prompts::Prompts;

/// The most characters of a rejected reply kept in the repair conversation.
const MAX_ECHOED_REPLY: usize = 8_000;

/// The reply limit for structured answers when `[llm] max_tokens` is not set:
/// a plan of a dozen subtasks must not be cut off by a provider's short
/// default (a cut-off JSON reply is a wasted call).
const STRUCTURED_MAX_TOKENS: u32 = 2_048;

/// An ask that ran out of attempts, or whose LLM calls failed.
#[derive(Debug)]
pub(crate) struct AskFailure {
    pub(crate) reason: String,
}

/// One structured question.
pub(crate) struct Ask<'a> {
    pub(crate) task_id: TaskId,
    /// Where rejected replies and failed calls are noted.
    pub(crate) notes: &'a Notes,
    /// Where the repair message comes from.
    pub(crate) prompts: &'a dyn Prompts,
    pub(crate) kind: CallKind,
    pub(crate) revision: u32,
    /// What is asked for, in words (`plan`, `progress evaluation`).
    pub(crate) what: &'static str,
    /// The schema's name in the request.
    pub(crate) schema_name: &'static str,
    pub(crate) schema: &'a Value,
    /// The progress event for a rejected reply.
    pub(crate) rejected: EventKind,
    /// The conversation: system prompt and first question.
    pub(crate) messages: Vec<ChatMessage>,
}

/// Asks until `parse` accepts a reply; every LLM error and rejected reply goes
/// into the progress ledger, and the tokens spent into `usage`.
pub(crate) async fn ask<T>(
    llm: &dyn LlmProvider,
    config: &TroupeConfig,
    ask: Ask<'_>,
    usage: &mut Usage,
    parse: impl Fn(&str) -> Result<T, PlanRejection>,
) -> Result<T, AskFailure> {
    let Ask {
        task_id,
        notes,
        prompts,
        kind,
        revision,
        what,
        schema_name,
        schema,
        rejected,
        mut messages,
    } = ask;
    let attempts = config.orchestrator.max_plan_attempts();
    let first_turn = messages.len();
    let mut last_problem = String::new();
    for attempt in 1..=attempts {
        let mut request = ChatRequest::new(kind, messages.clone());
        request.response_format = ResponseFormat::JsonSchema {
            name: schema_name.to_owned(),
            schema: schema.clone(),
        };
        request.temperature = config.llm.temperature;
        request.max_tokens = Some(config.llm.max_tokens.unwrap_or(STRUCTURED_MAX_TOKENS));
        request.meta.task_id = Some(task_id);
        request.meta.revision = revision;

        let outcome = llm_call::call(llm, &config.orchestrator_calls(), request).await;
        for e in &outcome.retried {
            notes
                .note(
                    EventKind::LlmError,
                    format!("{what} call failed, retrying: {e}"),
                )
                .await;
        }
        let reply = match outcome.result {
            Ok(reply) => reply,
            Err(e) => {
                notes
                    .note(EventKind::LlmError, format!("{what} call failed: {e}"))
                    .await;
                return Err(AskFailure {
                    reason: format!("the LLM could not be asked for a {what}: {e}"),
                });
            }
        };
        *usage += reply.usage;
        match parse(&reply.content) {
            Ok(value) => return Ok(value),
            Err(rejection) => {
                last_problem = rejection.to_string();
                tracing::info!(
                    attempt,
                    what,
                    problems = rejection.problems.len(),
                    "LLM reply rejected"
                );
                let detail = format!("reply {attempt} of {attempts} rejected: {rejection}");
                notes.note(rejected, detail).await;
                // Only the latest rejected reply and its problems follow the
                // question: the conversation stays bounded however many
                // repairs are allowed, and fits a small model's context.
                messages.truncate(first_turn);
                messages.push(ChatMessage::assistant(crate::prompts::clip(
                    &reply.content,
                    MAX_ECHOED_REPLY,
                )));
                messages.push(ChatMessage::user(prompts.repair(&rejection)));
            }
        }
    }
    Err(AskFailure {
        reason: format!("no valid {what} after {attempts} replies; the last: {last_problem}"),
    })
}
