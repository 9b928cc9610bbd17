//! The SQLite store: conformance, persistence across reopening, bad files.

// Test code: a failed expectation is meant to panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use troupe_core::AgentId;
use troupe_core::ledger::{EventKind, NewProgressEntry};
use troupe_core::store::{ProgressStore, StoreError, TaskStore};
use troupe_sql::{SqliteOptions, SqliteStore};
use troupe_testkit::conformance::store::{new_task, subtask};

/// The store conformance suite, one test per check, each on a new file.
mod conformance {
    use std::sync::Arc;

    use troupe_core::store::Stores;
    use troupe_sql::{SqliteOptions, SqliteStore};
    use troupe_testkit::conformance::Fixture;

    async fn stores(check: &str) -> Option<Fixture<Stores>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{check}.db"));
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        let stores = Stores::from_backend(Arc::new(store));
        // The directory goes when the check passed (a failed one keeps it).
        Some(Fixture::with_cleanup(stores, async move { drop(dir) }))
    }

    troupe_testkit::store_conformance!(stores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.db");
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let task = new_task("persist me");
    store.create_task(&task).await.unwrap();
    store
        .save_plan(
            task.id,
            0,
            &["a fact".into()],
            &[subtask("s1", "writer", 0, &[])],
        )
        .await
        .unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    store
        .append(NewProgressEntry::task(
            task.id,
            &me,
            EventKind::TaskSubmitted,
            "hi",
        ))
        .await
        .unwrap();
    let before = store.get_task(task.id).await.unwrap().unwrap();
    let entries = store.entries(task.id, 0, 10).await.unwrap();
    store.close().await;

    let reopened = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(reopened.get_task(task.id).await.unwrap().unwrap(), before);
    assert_eq!(reopened.entries(task.id, 0, 10).await.unwrap(), entries);
    let next = reopened
        .append(NewProgressEntry::task(
            task.id,
            &me,
            EventKind::PlanningStarted,
            "",
        ))
        .await
        .unwrap();
    assert_eq!(next.step, 2);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the tables you are looking for".repeat(100),
    )
    .unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a database"), "{err}");

    let missing_dir = dir.path().join("no/such/dir/troupe.db");
    let err = SqliteStore::open(&missing_dir, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string().contains("cannot open SQLite database"),
        "{err}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.db");
    SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO troupe_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_number_steps_without_gaps_or_clashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let b = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    let task = new_task("shared");
    a.create_task(&task).await.unwrap();
    let me = AgentId::new("orchestrator-1").unwrap();
    let mut steps = Vec::new();
    for i in 0..10 {
        let store = if i % 3 == 0 { &b } else { &a };
        let entry =
            NewProgressEntry::task(task.id, &me, EventKind::SubtaskProgress, format!("{i}"));
        steps.push(store.append(entry).await.unwrap().step);
    }
    assert_eq!(steps, (1..=10).collect::<Vec<u64>>());
    let details: Vec<String> = a
        .entries(task.id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(details, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}
