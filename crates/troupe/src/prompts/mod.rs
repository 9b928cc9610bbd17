//! [`Prompts`]: every prompt Troupe sends, as a trait you can implement to
//! change some of them and keep the rest ([`DefaultPrompts`] is the default).
//!
//! The orchestrator plans with `plan_system` + `plan_user`, asks for a
//! repair with `repair` when a reply does not validate, re-plans with
//! `situation` + `replan_user`, judges a stuck run with `evaluation_*` and
//! writes the final answer with `synthesis_*`; each built-in worker uses
//! `worker_system` + `worker_user`. Replies to plans and evaluations are
//! still parsed and validated against their schemas, whatever the prompts say.

mod text;

use serde_json::Value;
use troupe_core::envelope::DependencyResult;
use troupe_core::ledger::TaskLedger;
use troupe_core::plan::PlanRejection;
use troupe_core::role::RoleInfo;

pub(crate) use text::clip;

use crate::worker::Job;

/// The prompts of the orchestrator and the built-in workers. Every method
/// has the default text; override the ones you want to change.
///
/// ```
/// use std::sync::Arc;
/// use troupe::Troupe;
/// use troupe::prompts::Prompts;
/// use troupe_llm::mock::MockLlm;
///
/// /// Answers in French, otherwise as the defaults.
/// struct French;
///
/// impl Prompts for French {
///     fn synthesis_system(&self) -> String {
///         let default = troupe::prompts::DefaultPrompts.synthesis_system();
///         format!("{default} Write the answer in French.")
///     }
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let llm = Arc::new(MockLlm::builder().record().build().unwrap());
/// let troupe = Troupe::builder().llm(llm.clone()).prompts(French).build().await.unwrap();
/// troupe.run("Write a haiku about rust").await.unwrap();
/// let synthesis = llm.calls().into_iter().last().unwrap();
/// assert!(synthesis.request.messages[0].content.ends_with("in French."));
/// troupe.shutdown().await;
/// # });
/// ```
pub trait Prompts: Send + Sync + 'static {
    /// The orchestrator's system prompt for planning: the workers (`roles`),
    /// the rules, and the plan's JSON `schema`.
    fn plan_system(&self, roles: &[RoleInfo], max_subtasks: usize, schema: &Value) -> String {
        text::plan_system(roles, max_subtasks, schema)
    }

    /// The first planning message.
    fn plan_user(&self, goal: &str) -> String {
        text::plan_user(goal)
    }

    /// The message asking the LLM to repair a reply that did not validate.
    fn repair(&self, rejection: &PlanRejection) -> String {
        text::repair(rejection)
    }

    /// What happened to a stuck run (why it cannot finish, what failed, what
    /// is done, with earlier results fitted into `budget` characters), for a
    /// re-plan and for an evaluation.
    fn situation(&self, ledger: &TaskLedger, reason: &str, budget: usize) -> String {
        text::situation(ledger, reason, budget)
    }

    /// The message asking for a new plan after the current one failed.
    fn replan_user(&self, ledger: &TaskLedger, situation: &str) -> String {
        text::replan_user(ledger, situation)
    }

    /// The system prompt asking the LLM to judge a stuck run.
    fn evaluation_system(&self, schema: &Value) -> String {
        text::evaluation_system(schema)
    }

    /// The message asking for the judgement.
    fn evaluation_user(&self, situation: &str) -> String {
        text::evaluation_user(situation)
    }

    /// The orchestrator's system prompt for the final answer.
    fn synthesis_system(&self) -> String {
        text::synthesis_system()
    }

    /// The request for the final answer, with the results fitted into
    /// `budget` characters.
    fn synthesis_user(&self, goal: &str, results: &[DependencyResult], budget: usize) -> String {
        text::synthesis_user(goal, results, budget)
    }

    /// A built-in worker's system prompt.
    fn worker_system(&self, role: &RoleInfo) -> String {
        text::worker_system(role)
    }

    /// A built-in worker's task prompt, with its dependencies' results
    /// fitted into `budget` characters.
    fn worker_user(&self, job: &Job, budget: usize) -> String {
        text::worker_user(job, budget)
    }
}

/// The prompts Troupe sends unless told otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPrompts;

impl Prompts for DefaultPrompts {}

impl std::fmt::Debug for dyn Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prompts")
    }
}
