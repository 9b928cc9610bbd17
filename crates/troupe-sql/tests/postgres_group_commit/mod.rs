//! Group commit in the PostgreSQL store: many concurrent writes of several
//! tasks through several writers all land, numbered without gaps, and a write
//! that fails inside a batch fails alone.

use std::time::Duration;

use futures::future::join_all;
use troupe_core::AgentId;
use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::{
    Checkpoint, CheckpointStore, LeaseStore, ProgressStore, StoreError, TaskStore,
};
use troupe_core::{SubtaskId, TaskId};
use troupe_sql::{PostgresOptions, PostgresStore};
use troupe_testkit::conformance::store::{new_task, subtask};

use crate::postgres_support::ScratchDb;

fn options(name: &str, writers: usize) -> PostgresOptions {
    PostgresOptions {
        application_name: name.to_owned(),
        writers,
        ..PostgresOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_many_tasks_all_land() {
    let Some(db) = ScratchDb::create("concurrent_writes_of_many_tasks_all_land").await else {
        return;
    };
    let store = PostgresStore::connect(&db.url, options("group-commit", 3))
        .await
        .unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    let (tasks, appends) = (12usize, 40u64);
    let mut ids = Vec::new();
    for i in 0..tasks {
        let mut task = new_task(&format!("goal {i}"));
        task.subtasks = vec![subtask("s1", "writer", 0, &[])];
        ids.push(task.id);
        store.create_task(&task).await.unwrap();
    }
    let leases = join_all(
        ids.iter()
            .map(|t| store.acquire(*t, &me, Duration::from_secs(60))),
    )
    .await;
    let epochs: Vec<u64> = leases
        .into_iter()
        .map(|l| l.unwrap().unwrap().epoch)
        .collect();

    // Appends, checkpoints and a subtask's changes of every task, all at once.
    let writes = ids.iter().zip(&epochs).flat_map(|(task, epoch)| {
        let store = &store;
        let me = &me;
        (0..appends).map(move |i| async move {
            let entry =
                NewProgressEntry::task(*task, me, EventKind::SubtaskProgress, format!("{i}"));
            store.append(entry).await.unwrap();
            if i % 10 == 0 {
                let checkpoint = Checkpoint {
                    task: *task,
                    epoch: *epoch,
                    step: i,
                    state: serde_json::json!({ "i": i }),
                    at: troupe_core::time::now(),
                };
                store.save_checkpoint(&checkpoint).await.unwrap();
            }
            if i == 0 {
                let s1 = SubtaskId::new("s1").unwrap();
                let change = SubtaskChange::Dispatched { attempt: 1 };
                assert_eq!(
                    store.update_subtask(*task, &s1, &change).await.unwrap(),
                    Applied::Changed
                );
            }
        })
    });
    join_all(writes).await;

    for (task, epoch) in ids.iter().zip(&epochs) {
        let stored = store.entries(*task, 0, 1_000).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.step).collect::<Vec<_>>(),
            (1..=appends).collect::<Vec<_>>(),
            "task {task}"
        );
        let latest = store.latest_checkpoint(*task).await.unwrap().unwrap();
        assert_eq!(latest.epoch, *epoch);
        let got = store.get_task(*task).await.unwrap().unwrap();
        assert_eq!(got.subtasks[0].attempts, 1, "task {task}");
    }
    // A renewal spans the tasks of every writer.
    let held: Vec<(TaskId, u64)> = ids.iter().copied().zip(epochs.iter().copied()).collect();
    let renewed = store
        .renew(&me, &held, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(renewed, ids);
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_in_a_batch_fails_alone() {
    let Some(db) = ScratchDb::create("a_failing_write_in_a_batch_fails_alone").await else {
        return;
    };
    // One writer, so that every write below queues for the same batches.
    let store = PostgresStore::connect(&db.url, options("failing-job", 1))
        .await
        .unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    let task = new_task("real");
    store.create_task(&task).await.unwrap();
    let missing = TaskId::new();

    for round in 0..5 {
        let entry = |t: TaskId, i: usize| {
            NewProgressEntry::task(t, &me, EventKind::SubtaskProgress, format!("{round}-{i}"))
        };
        let appends = (0..30).map(|i| store.append(entry(task.id, i)));
        let fresh = (0..5)
            .map(|i| new_task(&format!("fresh {round}-{i}")))
            .collect::<Vec<_>>();
        // Started together: the failing writes share batches with the good ones.
        let (good, lost, duplicate, created) = tokio::join!(
            join_all(appends),
            store.append(entry(missing, 0)),
            store.create_task(&task),
            join_all(fresh.iter().map(|t| store.create_task(t))),
        );
        assert_eq!(lost, Err(StoreError::NotFound(missing)));
        assert_eq!(duplicate, Err(StoreError::Conflict(task.id)));
        for r in good {
            r.unwrap();
        }
        for r in created {
            r.unwrap();
        }
        for t in &fresh {
            assert!(store.get_task(t.id).await.unwrap().is_some());
        }
    }
    let stored = store.entries(task.id, 0, 1_000).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.step).collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>()
    );
    store.close().await;
    db.drop_now().await;
}
