//! Asking the LLM for a plan (through the [`structured`](super::structured)
//! loop) and, before a re-plan, for its evaluation of the run's progress.

use troupe_core::TaskId;
use troupe_core::ledger::EventKind;
use troupe_core::llm::{CallKind, ChatMessage, LlmProvider};
use troupe_core::plan::{
    EvaluationParser, Plan, PlanContext, PlanParser, PlanParserError, ProgressEvaluation,
};
use troupe_core::role::RoleInfo;
use troupe_core::task::Usage;

use super::recorder::Notes;
use super::structured::{self, Ask, AskFailure};
use crate::config::TroupeConfig;
use crate::prompts::Prompts;
use std::sync::Arc;

/// Plans tasks for one set of roles.
#[derive(Debug)]
pub(crate) struct Planner {
    prompts: Arc<dyn Prompts>,
    parser: PlanParser,
    system: String,
    evaluations: EvaluationParser,
    evaluation_system: String,
}

/// What a plan request is for.
pub(crate) struct PlanAsk<'a> {
    pub(crate) task_id: TaskId,
    /// Where rejected replies and failed calls are noted.
    pub(crate) notes: &'a Notes,
    /// The first user message: the goal, or the re-planning situation.
    pub(crate) message: String,
    pub(crate) revision: u32,
    pub(crate) context: &'a PlanContext,
}

impl Planner {
    pub(crate) fn new(
        roles: Vec<RoleInfo>,
        max_subtasks: usize,
        prompts: Arc<dyn Prompts>,
    ) -> Result<Self, PlanParserError> {
        let parser = PlanParser::new(roles, max_subtasks)?;
        let system = prompts.plan_system(parser.roles(), parser.max_subtasks(), parser.schema());
        let evaluations = EvaluationParser::new().map_err(PlanParserError::Schema)?;
        let evaluation_system = prompts.evaluation_system(evaluations.schema());
        Ok(Self {
            prompts,
            parser,
            system,
            evaluations,
            evaluation_system,
        })
    }

    /// Asks for a plan until one validates.
    pub(crate) async fn plan(
        &self,
        llm: &dyn LlmProvider,
        config: &TroupeConfig,
        ask: PlanAsk<'_>,
        usage: &mut Usage,
    ) -> Result<Plan, AskFailure> {
        let kind = if ask.revision == 0 {
            CallKind::Plan
        } else {
            CallKind::Replan
        };
        let question = Ask {
            task_id: ask.task_id,
            notes: ask.notes,
            prompts: self.prompts.as_ref(),
            kind,
            revision: ask.revision,
            what: "plan",
            schema_name: "plan",
            schema: self.parser.schema(),
            rejected: EventKind::PlanRejected,
            messages: vec![
                ChatMessage::system(&self.system),
                ChatMessage::user(ask.message),
            ],
        };
        let context = ask.context;
        structured::ask(llm, config, question, usage, |reply| {
            self.parser.parse(reply, context)
        })
        .await
    }

    /// Asks whether a stuck run is worth a new plan; `situation` says what
    /// happened (the same text a re-plan would get).
    pub(crate) async fn evaluate(
        &self,
        llm: &dyn LlmProvider,
        config: &TroupeConfig,
        notes: &Notes,
        task_id: TaskId,
        situation: String,
        usage: &mut Usage,
    ) -> Result<ProgressEvaluation, AskFailure> {
        let question = Ask {
            task_id,
            notes,
            prompts: self.prompts.as_ref(),
            kind: CallKind::Evaluate,
            revision: 0,
            what: "progress evaluation",
            schema_name: "progress_evaluation",
            schema: self.evaluations.schema(),
            rejected: EventKind::EvaluationRejected,
            messages: vec![
                ChatMessage::system(&self.evaluation_system),
                ChatMessage::user(situation),
            ],
        };
        structured::ask(llm, config, question, usage, |reply| {
            self.evaluations.parse(reply)
        })
        .await
    }
}
