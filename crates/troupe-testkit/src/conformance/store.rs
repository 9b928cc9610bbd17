//! The store conformance suite, for [`TaskStore`](troupe_core::store::TaskStore),
//! [`ProgressStore`](troupe_core::store::ProgressStore),
//! [`LeaseStore`](troupe_core::store::LeaseStore) and
//! [`CheckpointStore`](troupe_core::store::CheckpointStore) together. The
//! task, plan and subtask checks are here; the progress-ledger checks are in
//! `progress`, the listing and large-text checks in `listing`, the lease
//! checks in `leases`, the fence checks in `fences`, the checkpoint checks in
//! `checkpoints`.
//!
//! A store's tests: one per check, on a fresh store each.
//!
//! ```
//! use std::sync::Arc;
//! use troupe_core::store::{MemoryStore, Stores};
//! use troupe_testkit::conformance::Fixture;
//!
//! async fn memory(_check: &str) -> Option<Fixture<Stores>> {
//!     Some(Fixture::new(Stores::from_backend(Arc::new(MemoryStore::default()))))
//! }
//!
//! troupe_testkit::store_conformance!(memory);
//! # fn main() {}
//! ```

// A test suite: its assertions are meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod checkpoints;
mod fences;
mod leases;
mod listing;
mod progress;

use std::future::Future;

use troupe_core::ledger::{Applied, SubtaskChange, TaskLedger};
use troupe_core::store::{StoreError, Stores, TaskUpdate};
use troupe_core::task::{SubtaskRecord, SubtaskStatus, TaskRecord, TaskStatus, Usage};
use troupe_core::{AgentId, Role, SubtaskId, TaskId};

/// The store suite.
#[derive(Debug, Clone, Copy)]
pub struct StoreSuite;

/// Expands to one `#[tokio::test]` per check of [`StoreSuite`], each on the
/// stores of the fixture that `$make(check_name)` returns (`None` skips the
/// test: a service is missing).
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::__conformance_tests!($make, |fixture| (
            $crate::conformance::store::StoreSuite,
            fixture.subject.clone(),
        );
            round_trips_tasks,
            updates_tasks_until_they_end,
            saves_plans_and_replans,
            guards_subtask_changes_like_the_ledger,
            numbers_progress_steps,
            keeps_step_data,
            numbers_concurrent_appends_uniquely,
            lists_tasks_newest_first,
            keeps_large_and_unicode_text,
            leases_tasks,
            renews_many_leases,
            finds_orphaned_tasks,
            fences_task_updates,
            fences_progress_appends,
            fences_subtask_changes,
            saves_fenced_checkpoints,
            keeps_and_prunes_checkpoints,
        );
    };
}

fn agent() -> AgentId {
    AgentId::new("orchestrator-test").unwrap()
}

fn sid(id: &str) -> SubtaskId {
    SubtaskId::new(id).unwrap()
}

/// A pending task stamped now.
pub fn new_task(goal: &str) -> TaskRecord {
    TaskRecord::new(TaskId::new(), goal, troupe_core::time::now())
}

/// A pending subtask of `revision`.
pub fn subtask(id: &str, role: &str, revision: u32, deps: &[&str]) -> SubtaskRecord {
    SubtaskRecord {
        id: sid(id),
        revision,
        role: Role::new(role).unwrap(),
        title: format!("Title of {id}"),
        instruction: format!("Do {id} — carefully ✓"),
        depends_on: deps.iter().map(|d| sid(d)).collect(),
        status: SubtaskStatus::Pending,
        attempts: 0,
        result: None,
        last_error: None,
        agent: None,
    }
}

impl StoreSuite {
    /// Runs every check, each on stores from `make`, one after another
    /// (the macro [`store_conformance!`](crate::store_conformance) makes a
    /// test of each instead).
    pub async fn run<F, Fut>(&self, make: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Stores>,
    {
        self.round_trips_tasks(make().await).await;
        self.updates_tasks_until_they_end(make().await).await;
        self.saves_plans_and_replans(make().await).await;
        self.guards_subtask_changes_like_the_ledger(make().await)
            .await;
        self.numbers_progress_steps(make().await).await;
        self.keeps_step_data(make().await).await;
        self.numbers_concurrent_appends_uniquely(make().await).await;
        self.lists_tasks_newest_first(make().await).await;
        self.keeps_large_and_unicode_text(make().await).await;
        self.leases_tasks(make().await).await;
        self.renews_many_leases(make().await).await;
        self.finds_orphaned_tasks(make().await).await;
        self.fences_task_updates(make().await).await;
        self.fences_progress_appends(make().await).await;
        self.fences_subtask_changes(make().await).await;
        self.saves_fenced_checkpoints(make().await).await;
        self.keeps_and_prunes_checkpoints(make().await).await;
    }

    /// A task reads back as written; ids are unique; unknown ids are absent.
    pub async fn round_trips_tasks(&self, stores: Stores) {
        let check = "round_trips_tasks";
        let task = new_task("Écris un rapport — 売上 📈");
        stores.tasks.create_task(&task).await.unwrap();
        let got = stores.tasks.get_task(task.id).await.unwrap();
        assert_eq!(got.as_ref(), Some(&task), "{check}");
        let again = stores.tasks.create_task(&task).await;
        assert_eq!(again, Err(StoreError::Conflict(task.id)), "{check}");
        assert_eq!(
            stores.tasks.get_task(TaskId::new()).await.unwrap(),
            None,
            "{check}"
        );
        let missing = stores
            .tasks
            .update_task(TaskId::new(), &TaskUpdate::status(TaskStatus::Running))
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{check}: {missing:?}"
        );
    }

    /// Updates change the named fields; a task that ended takes no more.
    pub async fn updates_tasks_until_they_end(&self, stores: Stores) {
        let check = "updates_tasks_until_they_end";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let mut expected = task.clone();
        let usage = Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
        };
        let update = TaskUpdate {
            usage: Some(usage),
            ..TaskUpdate::status(TaskStatus::Running)
        };
        assert_eq!(
            stores.tasks.update_task(task.id, &update).await.unwrap(),
            Applied::Changed,
            "{check}"
        );
        update.apply(&mut expected);
        let done = TaskUpdate {
            result: Some("the answer".into()),
            ..TaskUpdate::status(TaskStatus::Completed)
        };
        stores.tasks.update_task(task.id, &done).await.unwrap();
        done.apply(&mut expected);
        let got = stores.tasks.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(got, expected, "{check}");
        assert_eq!(got.finished_at, Some(done.at), "{check}");

        let late = TaskUpdate {
            error: Some("late".into()),
            ..TaskUpdate::status(TaskStatus::Failed)
        };
        assert_eq!(
            stores.tasks.update_task(task.id, &late).await.unwrap(),
            Applied::Unchanged,
            "{check}"
        );
        assert_eq!(
            stores.tasks.get_task(task.id).await.unwrap().unwrap(),
            expected,
            "{check}"
        );
    }

    /// A plan is stored in order; a re-plan supersedes open work and keeps results.
    pub async fn saves_plans_and_replans(&self, stores: Stores) {
        let check = "saves_plans_and_replans";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let first = vec![
            subtask("s1", "researcher", 0, &[]),
            subtask("s2", "analyst", 0, &[]),
            subtask("s3", "writer", 0, &["s1", "s2"]),
        ];
        let facts = vec!["fact one".to_owned()];
        stores
            .tasks
            .save_plan(task.id, 0, &facts, &first)
            .await
            .unwrap();
        let got = stores.tasks.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(got.subtasks, first, "{check}");
        assert_eq!(got.facts, facts, "{check}");

        let t = task.id;
        stores
            .tasks
            .update_subtask(
                t,
                &sid("s1"),
                &SubtaskChange::Dispatched { attempt: 1 },
                None,
            )
            .await
            .unwrap();
        let done = SubtaskChange::Completed {
            attempt: 1,
            agent: agent(),
            result: "r1".into(),
        };
        stores
            .tasks
            .update_subtask(t, &sid("s1"), &done, None)
            .await
            .unwrap();
        stores
            .tasks
            .update_subtask(
                t,
                &sid("s2"),
                &SubtaskChange::Dispatched { attempt: 1 },
                None,
            )
            .await
            .unwrap();

        let second = vec![subtask("n1", "coder", 1, &["s1"])];
        let facts = vec!["fact one".to_owned(), "s2 failed".to_owned()];
        stores.tasks.save_plan(t, 1, &facts, &second).await.unwrap();
        let got = stores.tasks.get_task(t).await.unwrap().unwrap();
        let statuses: Vec<(&str, SubtaskStatus)> = got
            .subtasks
            .iter()
            .map(|s| (s.id.as_str(), s.status))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("s1", SubtaskStatus::Completed),
                ("s2", SubtaskStatus::Superseded),
                ("s3", SubtaskStatus::Superseded),
                ("n1", SubtaskStatus::Pending),
            ],
            "{check}"
        );
        assert_eq!(got.plan_revision, 1, "{check}");
        assert_eq!(got.facts, facts, "{check}");
        assert_eq!(
            got.subtask(&sid("s1")).unwrap().result.as_deref(),
            Some("r1"),
            "{check}"
        );
    }

    /// Guarded changes, duplicates and stale attempts included, give the same
    /// outcome in the store as in [`TaskLedger`].
    pub async fn guards_subtask_changes_like_the_ledger(&self, stores: Stores) {
        let check = "guards_subtask_changes_like_the_ledger";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let plan = vec![
            subtask("a", "coder", 0, &[]),
            subtask("b", "reviewer", 0, &["a"]),
        ];
        stores
            .tasks
            .save_plan(task.id, 0, &[], &plan)
            .await
            .unwrap();
        let mut model = TaskLedger::new(stores.tasks.get_task(task.id).await.unwrap().unwrap());

        let w = |n: u32| AgentId::new(format!("coder-{n}")).unwrap();
        let changes = [
            (
                "a",
                SubtaskChange::Started {
                    attempt: 1,
                    agent: w(1),
                },
            ),
            ("a", SubtaskChange::Dispatched { attempt: 2 }),
            ("a", SubtaskChange::Dispatched { attempt: 1 }),
            ("a", SubtaskChange::Dispatched { attempt: 1 }),
            (
                "a",
                SubtaskChange::Started {
                    attempt: 1,
                    agent: w(1),
                },
            ),
            (
                "a",
                SubtaskChange::Started {
                    attempt: 1,
                    agent: w(2),
                },
            ),
            (
                "a",
                SubtaskChange::AttemptFailed {
                    attempt: 1,
                    error: "timed out".into(),
                    retry: true,
                },
            ),
            (
                "a",
                SubtaskChange::Completed {
                    attempt: 1,
                    agent: w(1),
                    result: "late".into(),
                },
            ),
            ("a", SubtaskChange::Dispatched { attempt: 2 }),
            (
                "a",
                SubtaskChange::Completed {
                    attempt: 2,
                    agent: w(2),
                    result: "done".into(),
                },
            ),
            (
                "a",
                SubtaskChange::Completed {
                    attempt: 2,
                    agent: w(2),
                    result: "again".into(),
                },
            ),
            (
                "a",
                SubtaskChange::AttemptFailed {
                    attempt: 2,
                    error: "x".into(),
                    retry: false,
                },
            ),
            ("a", SubtaskChange::Cancelled),
            ("b", SubtaskChange::Dispatched { attempt: 1 }),
            (
                "b",
                SubtaskChange::AttemptFailed {
                    attempt: 1,
                    error: "bad".into(),
                    retry: false,
                },
            ),
            ("b", SubtaskChange::Dispatched { attempt: 2 }),
            ("b", SubtaskChange::Superseded),
            ("zz", SubtaskChange::Dispatched { attempt: 1 }),
        ];
        for (i, (id, change)) in changes.iter().enumerate() {
            let want = model.apply(&sid(id), change).unwrap_or(Applied::Unchanged);
            let got = stores
                .tasks
                .update_subtask(task.id, &sid(id), change, None)
                .await
                .unwrap();
            assert_eq!(got, want, "{check}: change {i} ({id}: {change:?})");
        }
        let stored = stores.tasks.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(stored.subtasks, model.record().subtasks, "{check}");
        let a = stored.subtask(&sid("a")).unwrap();
        assert_eq!(
            (a.status, a.attempts, a.result.as_deref()),
            (SubtaskStatus::Completed, 2, Some("done"))
        );
    }
}
