//! Ledger writes on the SQLite store: one awaited write at a time (the
//! latency of a group commit of one), 64 concurrent writes (how group commit
//! amortises the transaction), and the writes of one subtask's life.

// Benchmark code: a failed setup is meant to stop the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use troupe_core::ledger::{EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::{ProgressStore, TaskStore};
use troupe_core::task::{SubtaskRecord, SubtaskStatus, TaskRecord};
use troupe_core::{AgentId, Role, SubtaskId, TaskId};
use troupe_sql::{SqliteOptions, SqliteStore};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        rt.block_on(SqliteStore::open(
            &dir.path().join("bench.db"),
            SqliteOptions::default(),
        ))
        .unwrap(),
    );
    let task = TaskRecord::new(TaskId::new(), "bench", troupe_core::time::now());
    rt.block_on(store.create_task(&task)).unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    let entry = || {
        NewProgressEntry::task(
            task.id,
            &me,
            EventKind::SubtaskProgress,
            "a progress note of modest length",
        )
    };

    let mut group = c.benchmark_group("sqlite_ledger");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_progress_entry", |b| {
        b.iter(|| rt.block_on(store.append(entry())).unwrap());
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("append_64_concurrent", |b| {
        b.iter(|| {
            rt.block_on(async {
                for r in join_all((0..64).map(|_| store.append(entry()))).await {
                    r.unwrap();
                }
            });
        });
    });

    // A task's first plan and one subtask's life: five awaited writes
    // (create, save the plan, dispatched, started, completed).
    group.throughput(Throughput::Elements(5));
    group.bench_function("task_with_one_subtask_lifecycle", |b| {
        let id = SubtaskId::new("s1").unwrap();
        let record = SubtaskRecord {
            id: id.clone(),
            revision: 0,
            role: Role::new("writer").unwrap(),
            title: String::new(),
            instruction: "write".into(),
            depends_on: vec![],
            status: SubtaskStatus::Pending,
            attempts: 0,
            result: None,
            last_error: None,
            agent: None,
        };
        let changes = [
            SubtaskChange::Dispatched { attempt: 1 },
            SubtaskChange::Started {
                attempt: 1,
                agent: me.clone(),
            },
            SubtaskChange::Completed {
                attempt: 1,
                agent: me.clone(),
                result: "done".into(),
            },
        ];
        b.iter(|| {
            rt.block_on(async {
                let task = TaskRecord::new(TaskId::new(), "bench", troupe_core::time::now());
                store.create_task(&task).await.unwrap();
                store
                    .save_plan(task.id, 0, &[], std::slice::from_ref(&record))
                    .await
                    .unwrap();
                for change in &changes {
                    store
                        .update_subtask(task.id, &id, change, None)
                        .await
                        .unwrap();
                }
            });
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
