//! Group commit in the PostgreSQL store: many concurrent writes of several
//! tasks through several writers all land, numbered without gaps, and a write
//! that fails inside a batch fails alone.

use std::time::Duration;

use futures::future::join_all;
use troupe_core::AgentId;
use troupe_core::ledger::{Applied, EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::{
    Checkpoint, CheckpointStore, LeaseStore, ProgressStore, StoreError, TaskStore, TaskUpdate,
};
use troupe_core::task::{SubtaskStatus, TaskStatus};
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

/// Creates `count` tasks, each with the writer subtasks `plan` names (id,
/// dependencies), and leases them to `me`: their ids and lease epochs.
async fn leased_tasks(
    store: &PostgresStore,
    me: &AgentId,
    count: usize,
    plan: &[(&str, &[&str])],
) -> (Vec<TaskId>, Vec<u64>) {
    let mut ids = Vec::new();
    for i in 0..count {
        let mut task = new_task(&format!("goal {i}"));
        task.subtasks = plan
            .iter()
            .map(|(id, deps)| subtask(id, "writer", 0, deps))
            .collect();
        ids.push(task.id);
        store.create_task(&task).await.unwrap();
    }
    let leases = join_all(
        ids.iter()
            .map(|t| store.acquire(*t, me, Duration::from_secs(60))),
    )
    .await;
    let epochs = leases
        .into_iter()
        .map(|l| l.unwrap().unwrap().epoch)
        .collect();
    (ids, epochs)
}

/// A store with one writer (every write goes through the same batches) and
/// `count` tasks leased to `me`, each planned as s1, then s2 after s1.
struct OneWriter {
    store: PostgresStore,
    me: AgentId,
    worker: AgentId,
    ids: Vec<TaskId>,
    epochs: Vec<u64>,
    s1: SubtaskId,
    s2: SubtaskId,
}

impl OneWriter {
    async fn start(db: &ScratchDb, name: &str, count: usize) -> Self {
        let store = PostgresStore::connect(&db.url, options(name, 1))
            .await
            .unwrap();
        let me = AgentId::new("orchestrator-1").unwrap();
        let (ids, epochs) = leased_tasks(&store, &me, count, &[("s1", &[]), ("s2", &["s1"])]).await;
        Self {
            store,
            me,
            worker: AgentId::new("writer-1").unwrap(),
            ids,
            epochs,
            s1: SubtaskId::new("s1").unwrap(),
            s2: SubtaskId::new("s2").unwrap(),
        }
    }

    /// Attempt 1 completed by the worker with `result`.
    fn completed(&self, result: &str) -> SubtaskChange {
        SubtaskChange::Completed {
            attempt: 1,
            agent: self.worker.clone(),
            result: result.into(),
        }
    }

    /// Attempt 1 started by the worker.
    fn started(&self) -> SubtaskChange {
        SubtaskChange::Started {
            attempt: 1,
            agent: self.worker.clone(),
        }
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
    let appends = 40u64;
    let (ids, epochs) = leased_tasks(&store, &me, 12, &[("s1", &[])]).await;

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
                    store
                        .update_subtask(*task, &s1, &change, None)
                        .await
                        .unwrap(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_writes_answer_each_caller_as_a_single_write_would() {
    let Some(db) = ScratchDb::create("coalesced_writes_answer_each_caller").await else {
        return;
    };
    // One writer: one statement carries the subtask changes (or task
    // updates) of many tasks.
    let fixture = OneWriter::start(&db, "coalesced", 24).await;
    let OneWriter {
        store,
        worker,
        ids,
        epochs,
        s1,
        s2,
        ..
    } = &fixture;
    let missing = TaskId::new();

    // Even tasks: s1 dispatched as attempt 1 (applies). Odd tasks: s1
    // dispatched as attempt 2 (stale: its last attempt is 0, not 1). A task
    // that does not exist. All at once.
    let dispatch = SubtaskChange::Dispatched { attempt: 1 };
    let stale = SubtaskChange::Dispatched { attempt: 2 };
    let changes = ids.iter().enumerate().map(|(i, t)| {
        let change = if i % 2 == 0 { &dispatch } else { &stale };
        store.update_subtask(*t, s1, change, None)
    });
    let (answers, lost) = tokio::join!(
        join_all(changes),
        store.update_subtask(missing, s1, &dispatch, None)
    );
    for (i, answer) in answers.into_iter().enumerate() {
        let expected = if i % 2 == 0 {
            Applied::Changed
        } else {
            Applied::Unchanged
        };
        assert_eq!(answer, Ok(expected), "task {i}");
    }
    assert_eq!(lost, Err(StoreError::NotFound(missing)));

    // Each task's s1 completed, its s2 dispatched and then started, in one
    // go per task: the start applies only after the dispatch, so one task's
    // writes must keep their order through the rounds of a batch.
    let (complete, start) = (fixture.completed("done"), fixture.started());
    let follow = ids.iter().step_by(2).map(|t| {
        let (complete, dispatch, start) = (&complete, &dispatch, &start);
        async move {
            tokio::join!(
                store.update_subtask(*t, s1, complete, None),
                store.update_subtask(*t, s2, dispatch, None),
                store.update_subtask(*t, s2, start, None)
            )
        }
    });
    for (a, b, c) in join_all(follow).await {
        assert_eq!(a, Ok(Applied::Changed));
        assert_eq!(b, Ok(Applied::Changed));
        assert_eq!(c, Ok(Applied::Changed));
    }

    // Task updates: with the right epoch (applies), a wrong one (fenced),
    // and no fence on a task that does not exist.
    let updates = ids.iter().zip(epochs).enumerate().map(|(i, (t, epoch))| {
        let fence = if i % 3 == 0 { *epoch + 1 } else { *epoch };
        let update = TaskUpdate {
            fence: Some(fence),
            ..TaskUpdate::status(TaskStatus::Completed)
        };
        let store = &store;
        async move { store.update_task(*t, &update).await }
    });
    let unfenced = TaskUpdate::status(TaskStatus::Completed);
    let (answers, lost) = tokio::join!(join_all(updates), store.update_task(missing, &unfenced));
    for (i, answer) in answers.into_iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(answer, Err(StoreError::Fenced(ids[i])), "task {i}");
        } else {
            assert_eq!(answer, Ok(Applied::Changed), "task {i}");
        }
    }
    assert_eq!(lost, Err(StoreError::NotFound(missing)));

    // What the store holds agrees with every answer.
    for (i, t) in ids.iter().enumerate() {
        let got = store.get_task(*t).await.unwrap().unwrap();
        let (first, second) = (&got.subtasks[0], &got.subtasks[1]);
        if i % 2 == 0 {
            assert_eq!(first.status, SubtaskStatus::Completed, "task {i}");
            assert_eq!(first.result.as_deref(), Some("done"));
            assert_eq!(first.agent.as_ref(), Some(worker));
            assert_eq!(
                (second.status, second.attempts),
                (SubtaskStatus::Running, 1)
            );
            assert_eq!(second.agent.as_ref(), Some(worker));
        } else {
            assert_eq!((first.status, first.attempts), (SubtaskStatus::Pending, 0));
            assert_eq!(second.status, SubtaskStatus::Pending);
        }
        let ended = i % 3 != 0;
        assert_eq!(got.status == TaskStatus::Completed, ended, "task {i}");
        assert_eq!(got.finished_at.is_some(), ended, "task {i}");
    }
    store.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtask_change_and_its_entry_sent_together_answer_as_two_writes() {
    let Some(db) = ScratchDb::create("a_subtask_change_and_its_entry").await else {
        return;
    };
    // One writer: a change and the entry queued right after it for the same
    // task share a batch, where the writer fuses them into one statement.
    let fixture = OneWriter::start(&db, "fused", 16).await;
    let OneWriter {
        store,
        me,
        ids,
        s1,
        s2,
        ..
    } = &fixture;
    let missing = TaskId::new();
    let entry = |t: TaskId, s: &SubtaskId, event: EventKind| {
        NewProgressEntry::subtask(t, me, s, 1, event, format!("{event:?} {s}"))
    };

    // Even tasks: s1 dispatched (applies); odd tasks: a stale dispatch. Each
    // with its entry, which is appended either way, as a separate append
    // would be. And a pair for a task that does not exist.
    let dispatch = SubtaskChange::Dispatched { attempt: 1 };
    let stale = SubtaskChange::Dispatched { attempt: 2 };
    let pairs = ids.iter().enumerate().map(|(i, t)| {
        let change = if i % 2 == 0 { &dispatch } else { &stale };
        let (store, s1) = (&store, &s1);
        let entry = entry(*t, s1, EventKind::SubtaskDispatched);
        async move {
            tokio::join!(
                store.update_subtask(*t, s1, change, None),
                store.append(entry)
            )
        }
    });
    let (answers, (lost_change, lost_entry)) = tokio::join!(join_all(pairs), async {
        tokio::join!(
            store.update_subtask(missing, s1, &dispatch, None),
            store.append(entry(missing, s1, EventKind::SubtaskDispatched))
        )
    });
    for (i, (change, appended)) in answers.into_iter().enumerate() {
        let expected = if i % 2 == 0 {
            Applied::Changed
        } else {
            Applied::Unchanged
        };
        assert_eq!(change, Ok(expected), "task {i}");
        assert_eq!(appended.unwrap().step, 1, "task {i}");
    }
    assert_eq!(lost_change, Err(StoreError::NotFound(missing)));
    assert_eq!(lost_entry, Err(StoreError::NotFound(missing)));

    // Even tasks, three pairs in one go (s1 completed, s2 dispatched, s2
    // started): in order, each entry under the next step. One task's s2
    // result holds a NUL, which the server refuses: that statement fails,
    // the batch runs again write by write, and only that pair fails.
    let (complete, start) = (fixture.completed("done"), fixture.started());
    let refused = fixture.completed("nul \0 byte");
    let (bad, good) = (ids[0], &ids[2..]);
    let follow = good.iter().step_by(2).map(|t| {
        let store = &store;
        let (complete, dispatch, start) = (&complete, &dispatch, &start);
        let (e1, e2, e3) = (
            entry(*t, s1, EventKind::SubtaskCompleted),
            entry(*t, s2, EventKind::SubtaskDispatched),
            entry(*t, s2, EventKind::SubtaskStarted),
        );
        let (s1, s2) = (&s1, &s2);
        async move {
            tokio::join!(
                store.update_subtask(*t, s1, complete, None),
                store.append(e1),
                store.update_subtask(*t, s2, dispatch, None),
                store.append(e2),
                store.update_subtask(*t, s2, start, None),
                store.append(e3)
            )
        }
    });
    let (answers, (bad_change, bad_entry)) = tokio::join!(join_all(follow), async {
        tokio::join!(
            store.update_subtask(bad, s1, &refused, None),
            store.append(entry(bad, s1, EventKind::SubtaskCompleted))
        )
    });
    for (c1, e1, c2, e2, c3, e3) in answers {
        assert_eq!(
            (c1, c2, c3),
            (
                Ok(Applied::Changed),
                Ok(Applied::Changed),
                Ok(Applied::Changed)
            )
        );
        let steps = [e1.unwrap().step, e2.unwrap().step, e3.unwrap().step];
        assert_eq!(steps, [2, 3, 4]);
    }
    assert!(
        matches!(bad_change, Err(StoreError::Backend(_))),
        "{bad_change:?}"
    );
    // Rolled back with its change, the entry gets the change's error.
    assert_eq!(bad_entry.err(), bad_change.err());

    // The store agrees with every answer.
    for (i, t) in ids.iter().enumerate() {
        let got = store.get_task(*t).await.unwrap().unwrap();
        let statuses = (got.subtasks[0].status, got.subtasks[1].status);
        let events: Vec<EventKind> = store
            .entries(*t, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event)
            .collect();
        let followed = i % 2 == 0 && *t != bad;
        if followed {
            assert_eq!(
                statuses,
                (SubtaskStatus::Completed, SubtaskStatus::Running),
                "task {i}"
            );
            assert_eq!(got.subtasks[0].result.as_deref(), Some("done"));
            assert_eq!(
                events,
                [
                    EventKind::SubtaskDispatched,
                    EventKind::SubtaskCompleted,
                    EventKind::SubtaskDispatched,
                    EventKind::SubtaskStarted
                ],
                "task {i}"
            );
        } else {
            let first = if i % 2 == 0 {
                SubtaskStatus::Dispatched
            } else {
                SubtaskStatus::Pending
            };
            assert_eq!(statuses, (first, SubtaskStatus::Pending), "task {i}");
            assert_eq!(events, [EventKind::SubtaskDispatched], "task {i}");
        }
    }
    store.close().await;
    db.drop_now().await;
}
