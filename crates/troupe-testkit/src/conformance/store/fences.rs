//! The fence checks of the store suite: a task update, a subtask change or a
//! progress entry fenced with an epoch other than the task's lease epoch is
//! refused and changes nothing, while the current epoch and no fence are
//! accepted.

use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::{StoreError, Stores, TaskUpdate};
use troupe_core::task::{SubtaskStatus, TaskStatus};
use troupe_core::{AgentId, SubtaskId, TaskId};

use super::leases::{LONG, TTL, coordinator, past_ttl};
use super::{StoreSuite, new_task, subtask};

impl StoreSuite {
    /// A progress entry fenced with an epoch other than the task's is refused
    /// and takes no step; the current epoch and no fence are accepted.
    pub async fn fences_progress_appends(&self, stores: Stores) {
        let check = "fences_progress_appends";
        let (a, b) = (coordinator("coord-a"), coordinator("coord-b"));
        let task = new_task("goal");
        let t = task.id;
        stores.tasks.create_task(&task).await.unwrap();
        let entry = |by: &AgentId, fence: Option<u64>| {
            NewProgressEntry::task(t, by, EventKind::SubtaskProgress, format!("{fence:?}"))
                .with_fence(fence)
        };
        let append = |e: NewProgressEntry| {
            let stores = &stores;
            async move { stores.progress.append(e).await.map(|e| e.step) }
        };

        // Never leased: the epoch is 0.
        assert_eq!(
            append(entry(&a, Some(1))).await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        assert_eq!(append(entry(&a, Some(0))).await, Ok(1), "{check}");
        stores.leases.acquire(t, &a, TTL).await.unwrap().unwrap();
        assert_eq!(append(entry(&a, Some(1))).await, Ok(2), "{check}");
        past_ttl().await;
        stores.leases.acquire(t, &b, LONG).await.unwrap().unwrap();

        // a, presumed dead, writes on; b, who has the task now, is heard.
        assert_eq!(
            append(entry(&a, Some(1))).await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        assert_eq!(append(entry(&b, Some(2))).await, Ok(3), "{check}");
        assert_eq!(append(entry(&a, None)).await, Ok(4), "{check}: no fence");
        let missing = TaskId::new();
        let lost = NewProgressEntry::task(missing, &a, EventKind::SubtaskProgress, "lost")
            .with_fence(Some(1));
        assert_eq!(
            stores.progress.append(lost).await.map(|e| e.step),
            Err(StoreError::NotFound(missing)),
            "{check}"
        );
        let stored: Vec<(u64, String)> = stores
            .progress
            .entries(t, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.step, e.detail))
            .collect();
        let expected: Vec<(u64, String)> =
            [(1, "Some(0)"), (2, "Some(1)"), (3, "Some(2)"), (4, "None")]
                .into_iter()
                .map(|(step, detail)| (step, detail.to_owned()))
                .collect();
        assert_eq!(stored, expected, "{check}");
    }

    /// A subtask change fenced with an epoch other than the task's is refused
    /// and changes nothing; the current epoch and no fence are accepted.
    pub async fn fences_subtask_changes(&self, stores: Stores) {
        let check = "fences_subtask_changes";
        let (a, b) = (coordinator("coord-a"), coordinator("coord-b"));
        let mut task = new_task("goal");
        task.subtasks = vec![
            subtask("s1", "writer", 0, &[]),
            subtask("s2", "writer", 0, &[]),
        ];
        let t = task.id;
        stores.tasks.create_task(&task).await.unwrap();
        let (s1, s2) = (SubtaskId::new("s1").unwrap(), SubtaskId::new("s2").unwrap());
        let dispatch = SubtaskChange::Dispatched { attempt: 1 };
        let start = |by: &AgentId| SubtaskChange::Started {
            attempt: 1,
            agent: by.clone(),
        };
        let change = |task: TaskId, s: &SubtaskId, c: SubtaskChange, fence: Option<u64>| {
            let (stores, s) = (&stores, s.clone());
            async move { stores.tasks.update_subtask(task, &s, &c, fence).await }
        };

        // Never leased: the epoch is 0.
        assert_eq!(
            change(t, &s1, dispatch.clone(), Some(1)).await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        assert_eq!(
            change(t, &s1, dispatch.clone(), Some(0)).await,
            Ok(Applied::Changed),
            "{check}"
        );
        stores.leases.acquire(t, &a, TTL).await.unwrap().unwrap();
        assert_eq!(
            change(t, &s2, dispatch.clone(), Some(1)).await,
            Ok(Applied::Changed),
            "{check}"
        );
        past_ttl().await;
        stores.leases.acquire(t, &b, LONG).await.unwrap().unwrap();

        // a, presumed dead, marks s1 started; b, who has the task now, starts s2.
        assert_eq!(
            change(t, &s1, start(&a), Some(1)).await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        assert_eq!(
            change(t, &s2, start(&b), Some(2)).await,
            Ok(Applied::Changed),
            "{check}"
        );
        // A stale guard under the right fence is unchanged, not fenced.
        assert_eq!(
            change(t, &s2, dispatch.clone(), Some(2)).await,
            Ok(Applied::Unchanged),
            "{check}"
        );
        let missing = TaskId::new();
        assert_eq!(
            change(missing, &s1, dispatch.clone(), Some(1)).await,
            Err(StoreError::NotFound(missing)),
            "{check}"
        );
        let got = stores.tasks.get_task(t).await.unwrap().unwrap();
        let states: Vec<_> = got
            .subtasks
            .iter()
            .map(|s| (s.status, s.agent.clone()))
            .collect();
        assert_eq!(
            states,
            [
                (SubtaskStatus::Dispatched, None),
                (SubtaskStatus::Running, Some(b.clone()))
            ],
            "{check}"
        );
        assert_eq!(
            change(t, &s1, start(&a), None).await,
            Ok(Applied::Changed),
            "{check}: no fence"
        );
    }

    /// An update fenced with an old epoch is refused and changes nothing; the
    /// current epoch and no fence are accepted; ending the task ends its lease.
    pub async fn fences_task_updates(&self, stores: Stores) {
        let check = "fences_task_updates";
        let (a, b) = (coordinator("coord-a"), coordinator("coord-b"));
        let task = new_task("goal");
        let t = task.id;
        stores.tasks.create_task(&task).await.unwrap();
        let fenced = |epoch: u64, status: TaskStatus| TaskUpdate {
            fence: Some(epoch),
            ..TaskUpdate::status(status)
        };

        // Never leased: the epoch is 0.
        assert_eq!(
            stores
                .tasks
                .update_task(t, &fenced(1, TaskStatus::Planning))
                .await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        assert_eq!(
            stores
                .tasks
                .update_task(t, &fenced(0, TaskStatus::Planning))
                .await,
            Ok(Applied::Changed),
            "{check}"
        );
        let missing = TaskId::new();
        assert_eq!(
            stores
                .tasks
                .update_task(missing, &fenced(0, TaskStatus::Running))
                .await,
            Err(StoreError::NotFound(missing)),
            "{check}"
        );

        stores.leases.acquire(t, &a, TTL).await.unwrap().unwrap();
        stores
            .tasks
            .update_task(t, &fenced(1, TaskStatus::Running))
            .await
            .unwrap();
        past_ttl().await;
        let lease = stores.leases.acquire(t, &b, LONG).await.unwrap().unwrap();
        assert_eq!(lease.epoch, 2, "{check}");

        // a, presumed dead, tries to finish the task b now drives.
        let stale = TaskUpdate {
            result: Some("stale answer".into()),
            ..fenced(1, TaskStatus::Completed)
        };
        assert_eq!(
            stores.tasks.update_task(t, &stale).await,
            Err(StoreError::Fenced(t)),
            "{check}"
        );
        let got = stores.tasks.get_task(t).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.result),
            (TaskStatus::Running, None),
            "{check}"
        );

        let usage = TaskUpdate {
            usage: Some(troupe_core::task::Usage {
                prompt_tokens: 5,
                completion_tokens: 1,
            }),
            fence: Some(2),
            ..TaskUpdate::status(TaskStatus::Running)
        };
        assert_eq!(
            stores.tasks.update_task(t, &usage).await,
            Ok(Applied::Changed),
            "{check}"
        );
        let unfenced = TaskUpdate {
            error: Some("noted".into()),
            ..TaskUpdate::status(TaskStatus::Running)
        };
        assert_eq!(
            stores.tasks.update_task(t, &unfenced).await,
            Ok(Applied::Changed),
            "{check}"
        );
        let done = TaskUpdate {
            result: Some("the answer".into()),
            ..fenced(2, TaskStatus::Completed)
        };
        assert_eq!(
            stores.tasks.update_task(t, &done).await,
            Ok(Applied::Changed),
            "{check}"
        );
        let got = stores.tasks.get_task(t).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.result.as_deref(), got.error.as_deref()),
            (TaskStatus::Completed, Some("the answer"), Some("noted")),
            "{check}"
        );
        assert!(
            stores
                .leases
                .renew(&b, &[(t, 2)], LONG)
                .await
                .unwrap()
                .is_empty(),
            "{check}: the ended task's lease was kept"
        );
        assert_eq!(
            stores
                .tasks
                .update_task(t, &fenced(1, TaskStatus::Failed))
                .await,
            Err(StoreError::Fenced(t)),
            "{check}: an old epoch on an ended task"
        );
        assert_eq!(
            stores
                .tasks
                .update_task(t, &fenced(2, TaskStatus::Failed))
                .await,
            Ok(Applied::Unchanged),
            "{check}: an ended task changed"
        );
    }
}
