//! Asking the LLM for a plan until it gives a valid one, a bounded number of times.
//!
//! Each reply goes through [`PlanParser`]; a rejected reply stays in the
//! conversation, followed by the list of problems, so the model can repair its
//! own answer. LLM errors are retried by [`llm_call`](crate::llm_call); past the
//! bounds, planning fails with a reason a user can read.

use troupe_core::TaskId;
use troupe_core::ledger::EventKind;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider, ResponseFormat};
use troupe_core::plan::{Plan, PlanContext, PlanParser, PlanParserError};
use troupe_core::role::RoleInfo;
use troupe_core::task::Usage;

use super::recorder::Recorder;
use crate::config::TroupeConfig;
use crate::{llm_call, prompts};

/// The most characters of a rejected reply kept in the repair conversation.
const MAX_ECHOED_REPLY: usize = 8_000;

/// Plans tasks for one set of roles.
#[derive(Debug)]
pub(crate) struct Planner {
    parser: PlanParser,
    system: String,
}

/// Planning that ran out of attempts.
#[derive(Debug)]
pub(crate) struct PlanFailure {
    pub(crate) reason: String,
}

/// What a plan request is for.
pub(crate) struct PlanAsk<'a> {
    pub(crate) task_id: TaskId,
    /// The first user message: the goal, or the re-planning situation.
    pub(crate) message: String,
    pub(crate) revision: u32,
    pub(crate) context: &'a PlanContext,
}

impl Planner {
    pub(crate) fn new(roles: Vec<RoleInfo>, max_subtasks: usize) -> Result<Self, PlanParserError> {
        let parser = PlanParser::new(roles, max_subtasks)?;
        let system = prompts::plan_system(parser.roles(), parser.max_subtasks(), parser.schema());
        Ok(Self { parser, system })
    }

    /// Asks for a plan; every LLM error and rejected reply goes into the progress ledger.
    pub(crate) async fn plan(
        &self,
        llm: &dyn LlmProvider,
        config: &TroupeConfig,
        recorder: &Recorder,
        ask: PlanAsk<'_>,
        usage: &mut Usage,
    ) -> Result<Plan, PlanFailure> {
        let kind = if ask.revision == 0 {
            CallKind::Plan
        } else {
            CallKind::Replan
        };
        let mut messages = vec![
            ChatMessage::system(&self.system),
            ChatMessage::user(ask.message),
        ];
        let attempts = config.orchestrator.max_plan_attempts;
        let mut last_problem = String::new();
        for attempt in 1..=attempts {
            let mut request = ChatRequest::new(kind, messages.clone());
            request.response_format = ResponseFormat::JsonSchema {
                name: "plan".to_owned(),
                schema: self.parser.schema().clone(),
            };
            request.temperature = config.llm.temperature;
            request.max_tokens = config.llm.max_tokens;
            request.meta.task_id = Some(ask.task_id);
            request.meta.revision = ask.revision;

            let outcome = llm_call::call(llm, &config.llm, request).await;
            for e in &outcome.retried {
                recorder
                    .note(
                        ask.task_id,
                        EventKind::LlmError,
                        format!("planning call failed, retrying: {e}"),
                    )
                    .await;
            }
            let reply = match outcome.result {
                Ok(reply) => reply,
                Err(e) => {
                    recorder
                        .note(
                            ask.task_id,
                            EventKind::LlmError,
                            format!("planning call failed: {e}"),
                        )
                        .await;
                    return Err(PlanFailure {
                        reason: format!("the LLM could not be asked for a plan: {e}"),
                    });
                }
            };
            *usage += reply.usage;
            match self.parser.parse(&reply.content, ask.context) {
                Ok(plan) => return Ok(plan),
                Err(rejection) => {
                    last_problem = rejection.to_string();
                    tracing::info!(
                        attempt,
                        problems = rejection.problems.len(),
                        "plan rejected"
                    );
                    let detail = format!("reply {attempt} of {attempts} rejected: {rejection}");
                    recorder
                        .note(ask.task_id, EventKind::PlanRejected, detail)
                        .await;
                    messages.push(ChatMessage::assistant(prompts::clip(
                        &reply.content,
                        MAX_ECHOED_REPLY,
                    )));
                    messages.push(ChatMessage::user(prompts::plan_repair(&rejection)));
                }
            }
        }
        Err(PlanFailure {
            reason: format!("no valid plan after {attempts} replies; the last: {last_problem}"),
        })
    }
}
