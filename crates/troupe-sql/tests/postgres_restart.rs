//! A PostgreSQL restart under a live store: calls fail as retryable while the
//! server is down, and the pool reconnects by itself once it is back.
//!
//! The test runs its own throw-away server ([`LocalPostgres`]: initdb on a
//! free port), never the shared one; it is stopped as a crash would
//! (`pg_ctl stop -m immediate`). It needs the PostgreSQL server binaries (`apt-get install
//! postgresql`); without them it is skipped, except in CI.

// Test code: a failed expectation is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::time::Duration;

use troupe_core::store::{StoreError, TaskStore};
use troupe_sql::{PostgresOptions, PostgresStore};
use troupe_testkit::conformance::store::new_task;
use troupe_testkit::services::LocalPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_to() {
    let Some(server) = tokio::task::spawn_blocking(|| {
        LocalPostgres::start("a_restarted_server_is_reconnected_to")
    })
    .await
    .unwrap() else {
        return;
    };
    let options = PostgresOptions {
        acquire_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(&server.url(), options)
        .await
        .unwrap();
    let task = new_task("outlives a restart");
    store.create_task(&task).await.unwrap();
    assert!(store.get_task(task.id).await.unwrap().is_some());

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let down = store.get_task(task.id).await;
    assert!(
        matches!(&down, Err(e @ StoreError::Unavailable(_)) if e.is_retryable()),
        "{down:?}"
    );

    let server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .unwrap();
    // The first call after the restart works: the pool drops the dead
    // connections and opens new ones by itself.
    let back = store.get_task(task.id).await.unwrap();
    assert_eq!(back.map(|t| t.id), Some(task.id));
    store.create_task(&new_task("after")).await.unwrap();

    store.close().await;
    drop(server);
}
