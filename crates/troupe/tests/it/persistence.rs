//! The embedded default: a finished task survives a restart unchanged.

use std::sync::Arc;

use troupe::Troupe;
use troupe_core::store::Stores;
use troupe_core::task::TaskStatus;
use troupe_llm::mock::MockLlm;
use troupe_sql::{SqliteOptions, SqliteStore};

use crate::support::config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_unchanged_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.db");

    let store = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .stores(Stores::from_backend(store.clone()))
        .config(config())
        .build()
        .await
        .unwrap();
    let task = troupe.run("Summarise the quarter").await.unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    let entries = troupe.progress(task.id).await.unwrap();
    troupe.shutdown().await;
    drop(store);

    // A new process: a new store on the same file.
    let reopened = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap(),
    );
    let troupe = Troupe::builder()
        .llm(Arc::new(MockLlm::builtin()))
        .stores(Stores::from_backend(reopened))
        .config(config())
        .build()
        .await
        .unwrap();
    assert_eq!(troupe.task(task.id).await.unwrap().unwrap(), task);
    assert_eq!(troupe.progress(task.id).await.unwrap(), entries);
    troupe.shutdown().await;
}
