//! The checkpoint checks of the store suite: saving fenced by the lease
//! epoch, reading the newest, keeping only the newest few, pruning those of
//! ended tasks.

use serde_json::json;
use troupe_core::store::{CHECKPOINTS_KEPT, Checkpoint, StoreError, Stores, TaskUpdate};
use troupe_core::task::TaskStatus;
use troupe_core::{AgentId, TaskId};

use super::leases::{TTL, past_ttl};
use super::{StoreSuite, new_task};

fn checkpoint(task: TaskId, epoch: u64, step: u64) -> Checkpoint {
    Checkpoint {
        task,
        epoch,
        step,
        state: json!({
            "stalls": step,
            "replans": 0,
            "request": {"goal": "Écris — 売上 📈", "tags": ["a", "b"], "deadline": null},
        }),
        at: troupe_core::time::now(),
    }
}

impl StoreSuite {
    /// Checkpoints are saved under the current epoch only, the newest reads
    /// back as written, and a missing task is refused.
    pub async fn saves_fenced_checkpoints(&self, stores: Stores) {
        let check = "saves_fenced_checkpoints";
        let (a, b) = (AgentId::unique("coord-a"), AgentId::unique("coord-b"));
        let task = new_task("goal");
        let t = task.id;
        stores.tasks.create_task(&task).await.unwrap();
        let c = &stores.checkpoints;

        let missing = TaskId::new();
        assert_eq!(
            c.save_checkpoint(&checkpoint(missing, 0, 1)).await,
            Err(StoreError::NotFound(missing)),
            "{check}"
        );
        assert_eq!(c.latest_checkpoint(missing).await.unwrap(), None, "{check}");
        assert_eq!(c.latest_checkpoint(t).await.unwrap(), None, "{check}");

        stores.leases.acquire(t, &a, TTL).await.unwrap().unwrap();
        assert_eq!(
            c.save_checkpoint(&checkpoint(t, 0, 1)).await,
            Err(StoreError::Fenced(t)),
            "{check}: saved under an old epoch"
        );
        assert_eq!(
            c.save_checkpoint(&checkpoint(t, 2, 1)).await,
            Err(StoreError::Fenced(t)),
            "{check}: saved under a future epoch"
        );
        let mine = checkpoint(t, 1, 3);
        c.save_checkpoint(&mine).await.unwrap();
        assert_eq!(
            c.latest_checkpoint(t).await.unwrap().as_ref(),
            Some(&mine),
            "{check}"
        );

        // b takes over: a's checkpoints are refused, b's resume from a's.
        past_ttl().await;
        let lease = stores
            .leases
            .acquire(t, &b, TTL * 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            c.save_checkpoint(&checkpoint(t, 1, 9)).await,
            Err(StoreError::Fenced(t)),
            "{check}: the old coordinator saved"
        );
        assert_eq!(
            c.latest_checkpoint(t).await.unwrap().as_ref(),
            Some(&mine),
            "{check}"
        );
        let theirs = checkpoint(t, lease.epoch, 4);
        c.save_checkpoint(&theirs).await.unwrap();
        assert_eq!(
            c.latest_checkpoint(t).await.unwrap(),
            Some(theirs),
            "{check}"
        );
    }

    /// Only the newest [`CHECKPOINTS_KEPT`] of a task are kept; pruning
    /// deletes those of ended tasks and leaves running ones alone.
    ///
    /// The count `prune_checkpoints` returns is checked exactly, so nothing
    /// else should end tasks that have checkpoints in the same store while
    /// this check runs.
    pub async fn keeps_and_prunes_checkpoints(&self, stores: Stores) {
        let check = "keeps_and_prunes_checkpoints";
        let me = AgentId::unique("coord-a");
        let c = &stores.checkpoints;
        let mut tasks = Vec::new();
        for i in 0..2 {
            let task = new_task(&format!("goal {i}"));
            stores.tasks.create_task(&task).await.unwrap();
            let lease = stores
                .leases
                .acquire(task.id, &me, TTL * 50)
                .await
                .unwrap()
                .unwrap();
            tasks.push((task.id, lease.epoch));
        }
        let ((ended, ended_epoch), (running, running_epoch)) = (tasks[0], tasks[1]);
        let saved = CHECKPOINTS_KEPT as u64 + 2;
        let mut newest = None;
        for step in 1..=saved {
            let cp = checkpoint(ended, ended_epoch, step);
            c.save_checkpoint(&cp).await.unwrap();
            newest = Some(cp);
        }
        assert_eq!(c.latest_checkpoint(ended).await.unwrap(), newest, "{check}");
        let kept = checkpoint(running, running_epoch, 1);
        c.save_checkpoint(&kept).await.unwrap();

        // Whatever earlier runs left ended is pruned first, so the count is ours.
        c.prune_checkpoints().await.unwrap();
        assert_eq!(
            c.latest_checkpoint(ended).await.unwrap(),
            newest,
            "{check}: pruned a running task"
        );
        let done = TaskUpdate {
            fence: Some(ended_epoch),
            ..TaskUpdate::status(TaskStatus::Completed)
        };
        stores.tasks.update_task(ended, &done).await.unwrap();
        assert_eq!(
            c.prune_checkpoints().await.unwrap(),
            CHECKPOINTS_KEPT as u64,
            "{check}: not exactly the newest {CHECKPOINTS_KEPT} were kept"
        );
        assert_eq!(c.latest_checkpoint(ended).await.unwrap(), None, "{check}");
        assert_eq!(
            c.latest_checkpoint(running).await.unwrap(),
            Some(kept),
            "{check}"
        );
        assert_eq!(
            c.prune_checkpoints().await.unwrap(),
            0,
            "{check}: pruned twice"
        );
    }
}
