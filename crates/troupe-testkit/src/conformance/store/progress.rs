//! The progress-ledger checks of the store suite: step numbers from 1
//! without gaps (also under concurrent appends), and what an entry carries
//! coming back as it was written.

use futures::future::join_all;
use troupe_core::ledger::{EventKind, NewProgressEntry, PlannedSubtask, StepData};
use troupe_core::store::{StoreError, Stores};
use troupe_core::task::Usage;
use troupe_core::{Role, TaskId};

use super::{StoreSuite, agent, new_task, sid};

impl StoreSuite {
    /// Steps count from 1 without gaps; pages follow steps; unknown tasks are refused.
    pub async fn numbers_progress_steps(&self, stores: Stores) {
        let check = "numbers_progress_steps";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let mut written = Vec::new();
        for (i, event) in [
            EventKind::TaskSubmitted,
            EventKind::PlanningStarted,
            EventKind::PlanAccepted,
        ]
        .into_iter()
        .enumerate()
        {
            let entry = NewProgressEntry::task(task.id, &agent(), event, format!("detail {i}"));
            written.push(stores.progress.append(entry).await.unwrap());
        }
        let sub = NewProgressEntry::subtask(
            task.id,
            &agent(),
            &sid("s1"),
            2,
            EventKind::SubtaskStarted,
            "go",
        )
        .with_usage(Usage {
            prompt_tokens: 120,
            completion_tokens: 7,
        });
        written.push(stores.progress.append(sub).await.unwrap());
        assert_eq!(
            written[3].usage.map(|u| u.total()),
            Some(127),
            "{check}: usage is kept"
        );
        let steps: Vec<u64> = written.iter().map(|e| e.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4], "{check}");
        assert_eq!(
            stores.progress.entries(task.id, 0, 100).await.unwrap(),
            written,
            "{check}"
        );
        assert_eq!(
            stores.progress.entries(task.id, 1, 2).await.unwrap(),
            written[1..3].to_vec(),
            "{check}"
        );
        assert!(
            stores
                .progress
                .entries(TaskId::new(), 0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{check}"
        );
        let orphan = NewProgressEntry::task(TaskId::new(), &agent(), EventKind::TaskSubmitted, "");
        let refused = stores.progress.append(orphan).await;
        assert!(
            matches!(refused, Err(StoreError::NotFound(_))),
            "{check}: {refused:?}"
        );
    }

    /// Appends racing for one task each get their own step.
    pub async fn numbers_concurrent_appends_uniquely(&self, stores: Stores) {
        let check = "numbers_concurrent_appends_uniquely";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let n = 40u64;
        let appends = (0..n).map(|i| {
            let entry = NewProgressEntry::task(
                task.id,
                &agent(),
                EventKind::SubtaskProgress,
                format!("{i}"),
            );
            stores.progress.append(entry)
        });
        let mut steps: Vec<u64> = join_all(appends)
            .await
            .into_iter()
            .map(|r| r.unwrap().step)
            .collect();
        steps.sort_unstable();
        assert_eq!(steps, (1..=n).collect::<Vec<_>>(), "{check}");
    }

    /// A step's data comes back as written; a step without data has none.
    pub async fn keeps_step_data(&self, stores: Stores) {
        let check = "keeps_step_data";
        let task = new_task("goal");
        stores.tasks.create_task(&task).await.unwrap();
        let plan = StepData::Plan {
            revision: 2,
            subtasks: vec![
                PlannedSubtask {
                    id: sid("s0"),
                    role: Role::new("researcher").unwrap(),
                    title: String::new(),
                    depends_on: Vec::new(),
                },
                PlannedSubtask {
                    id: sid("s1"),
                    role: Role::new("writer").unwrap(),
                    title: "Draft \"it\" — 草稿 ✓".into(),
                    depends_on: vec![sid("s0")],
                },
            ],
        };
        let with = NewProgressEntry::task(task.id, &agent(), EventKind::PlanAccepted, "plan")
            .with_data(plan.clone());
        let without = NewProgressEntry::task(task.id, &agent(), EventKind::Replanning, "again");
        let a = stores.progress.append(with).await.unwrap();
        let b = stores.progress.append(without).await.unwrap();
        assert_eq!(a.data.as_ref(), Some(&plan), "{check}: the answer");
        assert_eq!(b.data, None, "{check}: the answer");
        let read = stores.progress.entries(task.id, 0, 10).await.unwrap();
        assert_eq!(read, vec![a, b], "{check}: read back");
    }
}
