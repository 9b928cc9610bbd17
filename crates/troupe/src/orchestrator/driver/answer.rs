//! The final answer, written by the LLM from every completed result.

use super::journal::Step;
use super::{Driver, End};
use crate::llm_call;
use troupe_core::envelope::DependencyResult;
use troupe_core::ledger::EventKind;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest};

impl Driver {
    pub(super) async fn synthesize(&mut self) -> Result<String, End> {
        let results: Vec<DependencyResult> = self
            .ledger
            .completed()
            .map(|s| DependencyResult {
                id: s.id.clone(),
                role: s.role.clone(),
                title: s.title.clone(),
                result: s.result.clone().unwrap_or_default(),
            })
            .collect();
        let detail = format!("writing the final answer from {} results", results.len());
        self.journal
            .record(Step::task(EventKind::SynthesisStarted, detail))
            .await?;
        let shared = self.shared.clone();
        let goal = self.ledger.record().goal.clone();
        let task_id = self.ledger.id();
        let build = |budget: usize| {
            let mut request = ChatRequest::new(
                CallKind::Synthesize,
                vec![
                    ChatMessage::system(shared.prompts.synthesis_system()),
                    ChatMessage::user(shared.prompts.synthesis_user(&goal, &results, budget)),
                ],
            );
            request.temperature = shared.config.llm.temperature;
            request.max_tokens = shared.config.llm.max_tokens;
            request.meta.task_id = Some(task_id);
            request
        };
        let budget = shared.config.orchestrator.prompt_budget_chars();
        let shrinkable = !results.is_empty();
        let calls = shared.config.orchestrator_calls();
        let call = llm_call::call_shrinking(shared.llm.as_ref(), &calls, budget, shrinkable, build);
        let outcome = self.bounded(call).await?;
        if let Ok(reply) = &outcome.result {
            self.spent(reply.usage);
        }
        let notes = self.journal.notes();
        for e in &outcome.retried {
            notes
                .note(
                    EventKind::LlmError,
                    format!("synthesis call failed, retrying: {e}"),
                )
                .await;
        }
        match outcome.result {
            Ok(reply) if !reply.content.trim().is_empty() => Ok(reply.content.trim().to_owned()),
            Ok(_) => Err(End::Failed("the LLM's final answer was empty".into())),
            Err(e) => {
                notes
                    .note(EventKind::LlmError, format!("synthesis call failed: {e}"))
                    .await;
                Err(End::Failed(format!(
                    "the final answer could not be written: {e}"
                )))
            }
        }
    }
}
