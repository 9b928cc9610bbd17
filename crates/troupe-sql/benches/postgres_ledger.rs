//! Ledger operations on the PostgreSQL store (over a local socket): one
//! awaited append, 64 concurrent appends to one task (they take turns on the
//! task's row), reading a task with its plan, a page of running tasks, one
//! subtask's life, and a lease renewal.
//!
//! Runs against `TROUPE_TEST_POSTGRES_URL` (default: the local `test`
//! database) in a scratch database it drops at the end; skipped when no
//! PostgreSQL answers. Every write is a commit PostgreSQL waits to flush
//! (`synchronous_commit = on`), so the disk's flush time dominates them.

// Benchmark code: a failed setup is meant to stop the run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use troupe_core::ledger::{EventKind, NewProgressEntry, SubtaskChange};
use troupe_core::store::{LeaseStore, ProgressStore, TaskQuery, TaskStore, TaskUpdate};
use troupe_core::task::{SubtaskRecord, SubtaskStatus, TaskRecord, TaskStatus};
use troupe_core::{AgentId, Role, SubtaskId, TaskId};
use troupe_sql::{PostgresOptions, PostgresStore};

fn subtask(id: &str) -> SubtaskRecord {
    SubtaskRecord {
        id: SubtaskId::new(id).unwrap(),
        revision: 0,
        role: Role::new("writer").unwrap(),
        title: format!("Title of {id}"),
        instruction: "write a paragraph about the subject".into(),
        depends_on: vec![],
        status: SubtaskStatus::Pending,
        attempts: 0,
        result: None,
        last_error: None,
        agent: None,
    }
}

async fn admin(url: &str, sql: String) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(base) = rt.block_on(troupe_testkit::services::postgres_url("postgres_ledger")) else {
        return;
    };
    // Named like the tests' scratch databases, so that their sweep drops it
    // should this run stop before its own drop.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!("troupe_t_{secs}_{}_bench", std::process::id());
    rt.block_on(admin(&base, format!("CREATE DATABASE {name}")));
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    let store = Arc::new(
        rt.block_on(PostgresStore::connect(&url, PostgresOptions::default()))
            .unwrap(),
    );
    let me = AgentId::new("orchestrator-1").unwrap();

    // A task with a six-step plan, plus 2,000 ended tasks around it to list past.
    let task = TaskRecord::new(TaskId::new(), "bench", troupe_core::time::now());
    rt.block_on(async {
        store.create_task(&task).await.unwrap();
        let plan: Vec<_> = (1..=6).map(|i| subtask(&format!("s{i}"))).collect();
        store.save_plan(task.id, 0, &[], &plan).await.unwrap();
        store
            .update_task(task.id, &TaskUpdate::status(TaskStatus::Running))
            .await
            .unwrap();
        for chunk in 0..20 {
            let creates = (0..100).map(|i| {
                let store = store.clone();
                async move {
                    let t = TaskRecord::new(
                        TaskId::new(),
                        format!("old {chunk}-{i}"),
                        troupe_core::time::now(),
                    );
                    store.create_task(&t).await.unwrap();
                    store
                        .update_task(t.id, &TaskUpdate::status(TaskStatus::Completed))
                        .await
                        .unwrap();
                }
            });
            join_all(creates).await;
        }
    });
    let entry = || {
        NewProgressEntry::task(
            task.id,
            &me,
            EventKind::SubtaskProgress,
            "a progress note of modest length",
        )
    };

    let mut group = c.benchmark_group("postgres_ledger");
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
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_task_with_6_subtasks", |b| {
        b.iter(|| rt.block_on(store.get_task(task.id)).unwrap());
    });
    group.bench_function("list_50_running_tasks", |b| {
        let query = TaskQuery {
            status: Some(TaskStatus::Running),
            ..TaskQuery::default()
        };
        b.iter(|| rt.block_on(store.list_tasks(&query)).unwrap());
    });
    // Criterion calls the closure more than once (warm-up, then samples): acquire outside it.
    let lease = rt
        .block_on(store.acquire(task.id, &me, Duration::from_secs(600)))
        .unwrap()
        .unwrap();
    group.bench_function("renew_lease", |b| {
        b.iter(|| {
            rt.block_on(store.renew(&me, &[(task.id, lease.epoch)], Duration::from_secs(600)))
                .unwrap()
        });
    });
    // A task's first plan and one subtask's life: five awaited writes
    // (create, save the plan, dispatched, started, completed).
    group.throughput(Throughput::Elements(5));
    group.bench_function("task_with_one_subtask_lifecycle", |b| {
        let record = subtask("s1");
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
                let t = TaskRecord::new(TaskId::new(), "bench", troupe_core::time::now());
                store.create_task(&t).await.unwrap();
                store
                    .save_plan(t.id, 0, &[], std::slice::from_ref(&record))
                    .await
                    .unwrap();
                for change in &changes {
                    store
                        .update_subtask(t.id, &record.id, change, None)
                        .await
                        .unwrap();
                }
            });
        });
    });
    group.finish();

    rt.block_on(async {
        store.close().await;
        admin(
            &base,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
