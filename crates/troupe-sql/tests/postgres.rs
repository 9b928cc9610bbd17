//! The PostgreSQL store: conformance, several pools on one database (step
//! numbering, lease races, concurrent migrations), a newer schema, connection
//! failures, connections the server dropped, and group commit
//! (`postgres_group_commit`).
//!
//! Each test makes its own scratch database (`postgres_support`), and is
//! skipped with a printed reason when no PostgreSQL answers (a failure in CI).

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod postgres_group_commit;
mod postgres_support;

use std::time::Duration;

use futures::future::join_all;
use sqlx::{Connection, PgConnection};
use troupe_core::AgentId;
use troupe_core::ledger::{EventKind, NewProgressEntry};
use troupe_core::store::{LeaseStore, ProgressStore, StoreError, TaskStore};
use troupe_sql::{PostgresOptions, PostgresStore};
use troupe_testkit::conformance::store::{new_task, subtask};

use postgres_support::{ScratchDb, with_database};

fn options(name: &str) -> PostgresOptions {
    PostgresOptions {
        application_name: name.to_owned(),
        ..PostgresOptions::default()
    }
}

/// The store conformance suite, one test per check, each in a scratch database.
mod conformance {
    use std::sync::Arc;

    use troupe_core::store::Stores;
    use troupe_sql::PostgresStore;
    use troupe_testkit::conformance::Fixture;

    use super::{ScratchDb, options};

    async fn stores(check: &str) -> Option<Fixture<Stores>> {
        let db = ScratchDb::create(check).await?;
        let store = Arc::new(
            PostgresStore::connect(&db.url, options(check))
                .await
                .unwrap(),
        );
        let stores = Stores::from_backend(store.clone());
        Some(Fixture::with_cleanup(stores, async move {
            store.close().await;
            db.drop_now().await;
        }))
    }

    troupe_testkit::store_conformance!(stores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_number_concurrent_appends_without_gaps_or_clashes() {
    let Some(db) = ScratchDb::create("two_pools_number_concurrent_appends").await else {
        return;
    };
    let a = PostgresStore::connect(&db.url, options("appends-a"))
        .await
        .unwrap();
    let b = PostgresStore::connect(&db.url, options("appends-b"))
        .await
        .unwrap();
    let task = new_task("shared");
    a.create_task(&task).await.unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    let n = 200u64;
    let appends = (0..n).map(|i| {
        let store = if i % 2 == 0 { &a } else { &b };
        let entry =
            NewProgressEntry::task(task.id, &me, EventKind::SubtaskProgress, format!("{i}"));
        store.append(entry)
    });
    let mut steps: Vec<u64> = join_all(appends)
        .await
        .into_iter()
        .map(|r| r.unwrap().step)
        .collect();
    steps.sort_unstable();
    assert_eq!(steps, (1..=n).collect::<Vec<_>>());
    let stored = b.entries(task.id, 0, 1_000).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.step).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    let mut details: Vec<u64> = stored.iter().map(|e| e.detail.parse().unwrap()).collect();
    details.sort_unstable();
    assert_eq!(
        details,
        (0..n).collect::<Vec<_>>(),
        "an entry was lost or doubled"
    );
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_racing_for_an_expired_lease_have_one_winner() {
    let Some(db) = ScratchDb::create("two_pools_racing_for_an_expired_lease").await else {
        return;
    };
    let a = PostgresStore::connect(&db.url, options("race-a"))
        .await
        .unwrap();
    let b = PostgresStore::connect(&db.url, options("race-b"))
        .await
        .unwrap();
    let (dead, ca, cb) = (
        AgentId::unique("coord-dead"),
        AgentId::unique("coord-a"),
        AgentId::unique("coord-b"),
    );
    let mut tasks = Vec::new();
    for i in 0..30 {
        let task = new_task(&format!("goal {i}"));
        a.create_task(&task).await.unwrap();
        a.acquire(task.id, &dead, Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap();
        tasks.push(task.id);
    }
    // The dead coordinator's 100 ms leases lapse (by the server's clock).
    troupe_testkit::eventually("the leases lapse", Duration::from_secs(10), || async {
        (a.orphaned(Duration::ZERO, 100).await.unwrap().len() == tasks.len()).then_some(())
    })
    .await;
    let races = tasks.iter().map(|t| async {
        let ttl = Duration::from_secs(30);
        tokio::join!(a.acquire(*t, &ca, ttl), b.acquire(*t, &cb, ttl))
    });
    for (t, (got_a, got_b)) in tasks.iter().zip(join_all(races).await) {
        let winners: Vec<_> = [got_a.unwrap(), got_b.unwrap()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(winners.len(), 1, "task {t}: {winners:?}");
        assert_eq!(winners[0].epoch, 2, "task {t}");
    }
    a.close().await;
    b.close().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_starting_together_migrate_once() {
    let Some(db) = ScratchDb::create("coordinators_starting_together_migrate_once").await else {
        return;
    };
    let starts = (0..6).map(|i| PostgresStore::connect(&db.url, options(&format!("start-{i}"))));
    let stores: Vec<PostgresStore> = join_all(starts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM troupe_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let known: Vec<i64> = troupe_sql::migrations::POSTGRES
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, known);
    conn.close().await.unwrap();
    for store in &stores {
        store.close().await;
    }
    db.drop_now().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(db) = ScratchDb::create("postgres_a_newer_schema_is_refused").await else {
        return;
    };
    PostgresStore::connect(&db.url, options("newer"))
        .await
        .unwrap()
        .close()
        .await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("INSERT INTO troupe_migrations (version, name) VALUES (999, 'future')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = PostgresStore::connect(&db.url, options("newer"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
    db.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_server_or_a_bad_url_is_a_clear_error() {
    // Nothing listens on port 1; the error comes at once, not after the
    // acquire timeout (an hour here: a connect that waited for it would
    // overrun the test's own bound by far).
    let quick = PostgresOptions {
        acquire_timeout: Duration::from_secs(3600),
        ..PostgresOptions::default()
    };
    let connect =
        PostgresStore::connect("postgres://postgres:secret@127.0.0.1:1/test", quick.clone());
    let err = tokio::time::timeout(Duration::from_secs(60), connect)
        .await
        .expect("a refused connection is an error at once, not after the acquire timeout")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1/test"), "{text}");
    assert!(!text.contains("secret"), "the password leaked: {text}");

    for url in ["postgres://u@[::1/db", "postgres://u@h:notaport/db"] {
        let err = PostgresStore::connect(url, quick.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{url}: {err:?}");
        assert!(err.to_string().contains("invalid PostgreSQL URL"), "{err}");
    }

    let err = troupe_sql::open_url("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_missing_database_is_not_retryable() {
    let Some(url) = troupe_testkit::services::postgres_url("a_missing_database").await else {
        return;
    };
    let url = with_database(&url, "troupe_no_such_database");
    let err = PostgresStore::connect(&url, options("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("troupe_no_such_database"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_url_opens_postgres_stores() {
    let Some(db) = ScratchDb::create("open_url_opens_postgres_stores").await else {
        return;
    };
    let stores = troupe_sql::open_url(&db.url).await.unwrap();
    let task = new_task("via open_url");
    stores.tasks.create_task(&task).await.unwrap();
    stores
        .tasks
        .save_plan(task.id, 0, &[], &[subtask("s1", "writer", 0, &[])])
        .await
        .unwrap();
    let got = stores.tasks.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(got.subtasks.len(), 1);
    drop(stores);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_dropped_are_replaced() {
    let Some(db) = ScratchDb::create("connections_the_server_dropped").await else {
        return;
    };
    // What a server restart does to a pool: every connection it holds is cut.
    let name = format!("dropped-{}", std::process::id());
    let store = PostgresStore::connect(&db.url, options(&name))
        .await
        .unwrap();
    let task = new_task("survives");
    store.create_task(&task).await.unwrap();
    let gets = (0..4).map(|_| store.get_task(task.id));
    for got in join_all(gets).await {
        assert!(got.unwrap().is_some());
    }
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the pool kept no connection open");
    admin.close().await.unwrap();

    // The pool checks each connection before use and opens new ones: every call works.
    for i in 0..8 {
        let got = store.get_task(task.id).await;
        assert_eq!(got.unwrap().map(|t| t.id), Some(task.id), "call {i}");
    }
    let me = AgentId::new("orchestrator-1").unwrap();
    let entry = NewProgressEntry::task(task.id, &me, EventKind::TaskSubmitted, "after");
    assert_eq!(store.append(entry).await.unwrap().step, 1);

    store.close().await;
    let closed = store.get_task(task.id).await;
    assert_eq!(closed, Err(StoreError::Closed));
    db.drop_now().await;
}
