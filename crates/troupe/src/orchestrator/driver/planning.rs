//! Planning and re-planning: asking for a plan, installing it, and deciding
//! when a blocked or stalled run gets a new plan or ends.

use super::super::planner::PlanAsk;
use super::journal::Step;
use super::{Driver, End};
use troupe_core::SubtaskId;
use troupe_core::ledger::{EventKind, PlannedSubtask, StepData};
use troupe_core::plan::{Decision, Plan, PlanContext, ProgressEvaluation};
use troupe_core::task::{TaskStatus, Usage};

impl Driver {
    pub(super) async fn ask_plan(&mut self, situation: Option<String>) -> Result<Plan, End> {
        let first = situation.is_none();
        let revision = if first {
            0
        } else {
            self.ledger.record().plan_revision + 1
        };
        let context = PlanContext {
            used_ids: self.ledger.used_ids(),
            completed_ids: self.ledger.completed_ids(),
        };
        let message =
            situation.unwrap_or_else(|| self.shared.prompts.plan_user(&self.ledger.record().goal));
        let notes = self.journal.notes();
        let ask = PlanAsk {
            task_id: self.ledger.id(),
            notes: &notes,
            message,
            revision,
            context: &context,
        };
        let shared = self.shared.clone();
        let mut usage = Usage::default();
        let planned = self
            .bounded(
                shared
                    .planner
                    .plan(shared.llm.as_ref(), &shared.config, ask, &mut usage),
            )
            .await;
        self.spent(usage);
        planned?.map_err(|failure| End::Failed(failure.reason))
    }

    pub(super) async fn install(&mut self, plan: Plan) -> Result<(), End> {
        self.ledger.install_plan(&plan);
        let record = self.ledger.record();
        let revision = record.plan_revision;
        let subtasks: Vec<_> = self.ledger.current().cloned().collect();
        self.shared
            .stores
            .tasks
            .save_plan(record.id, revision, &record.facts, &subtasks)
            .await?;
        let steps: Vec<String> = plan
            .subtasks
            .iter()
            .map(|s| {
                let deps: Vec<&str> = s.depends_on.iter().map(SubtaskId::as_str).collect();
                if deps.is_empty() {
                    format!("{} ({})", s.id, s.role)
                } else {
                    format!("{} ({}) after {}", s.id, s.role, deps.join("+"))
                }
            })
            .collect();
        let detail = format!("plan revision {revision}: {}", steps.join(", "));
        let data = StepData::Plan {
            revision,
            subtasks: plan
                .subtasks
                .iter()
                .map(|s| PlannedSubtask {
                    id: s.id.clone(),
                    role: s.role.clone(),
                    title: s.title.clone(),
                    depends_on: s.depends_on.clone(),
                })
                .collect(),
        };
        let step = Step::task(EventKind::PlanAccepted, detail).with_data(data);
        if self.ledger.record().status == TaskStatus::Running {
            self.journal.record(step).await?;
            Ok(())
        } else {
            self.set_status(TaskStatus::Running, Some(step)).await
        }
    }

    pub(super) async fn replan_or_fail(&mut self, reason: String) -> Result<(), End> {
        let max = self.shared.config.orchestrator.max_replans;
        if self.replans >= max {
            return Err(End::Failed(if max == 0 {
                reason
            } else {
                format!("{reason} (after {} re-plans)", self.replans)
            }));
        }
        let budget = self.shared.config.orchestrator.prompt_budget_chars();
        let situation = self.shared.prompts.situation(&self.ledger, &reason, budget);
        if self.shared.config.orchestrator.evaluate_progress
            && let Some(evaluation) = self.evaluate(&situation).await?
            && evaluation.decision == Decision::GiveUp
        {
            return Err(End::Failed(format!(
                "{reason}; the orchestrator gave up: {}",
                evaluation.reason
            )));
        }
        self.replans += 1;
        self.journal
            .record(Step::task(EventKind::Replanning, reason.clone()))
            .await?;
        let plan = self
            .ask_plan(Some(
                self.shared.prompts.replan_user(&self.ledger, &situation),
            ))
            .await?;
        self.install(plan).await?;
        self.attempts.supersede_all();
        self.stalls = 0;
        Ok(())
    }

    /// Asks the LLM to judge the stuck run (Magentic-One's progress ledger
    /// questions). `None` when no valid evaluation came: the run then re-plans
    /// as it would without one.
    async fn evaluate(&mut self, situation: &str) -> Result<Option<ProgressEvaluation>, End> {
        let shared = self.shared.clone();
        let task_id = self.ledger.id();
        let notes = self.journal.notes();
        let mut usage = Usage::default();
        let evaluated = self
            .bounded(shared.planner.evaluate(
                shared.llm.as_ref(),
                &shared.config,
                &notes,
                task_id,
                shared.prompts.evaluation_user(situation),
                &mut usage,
            ))
            .await;
        self.spent(usage);
        match evaluated? {
            Ok(e) => {
                let detail = format!(
                    "decision: {}; progress being made: {}; in a loop: {}; {}",
                    match e.decision {
                        Decision::Replan => "replan",
                        Decision::GiveUp => "give up",
                    },
                    yes_no(e.progress_being_made),
                    yes_no(e.in_loop),
                    e.reason
                );
                self.journal
                    .record(Step::task(EventKind::ProgressEvaluated, detail))
                    .await?;
                Ok(Some(e))
            }
            Err(failure) => {
                let detail = format!("{}; re-planning without it", failure.reason);
                self.journal
                    .record(Step::task(EventKind::ProgressEvaluated, detail))
                    .await?;
                Ok(None)
            }
        }
    }

    pub(super) fn blocked_reason(&self) -> String {
        let failed: Vec<String> = self
            .ledger
            .failed()
            .map(|s| {
                format!(
                    "subtask {} ({}) failed: {}",
                    s.id,
                    s.role,
                    s.last_error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect();
        if failed.is_empty() {
            "no subtask can run".to_owned()
        } else {
            failed.join("; ")
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
