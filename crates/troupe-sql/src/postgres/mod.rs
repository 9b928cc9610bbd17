//! [`PostgresStore`]: the task and progress ledgers, task leases and
//! checkpoints in PostgreSQL, for several coordinators and workers on several
//! machines.
//!
//! Reads run on a pool. Writes go through a few writer tasks that commit them
//! in batches (the `writer` module: group commit), the most frequent ones
//! coalesced, one statement for the writes of many tasks (`coalesced`);
//! concurrent writers to one task serialize on the task's row lock, so
//! steps and checkpoints are numbered without gaps and a lease has one holder.
//! Leases take "now" from the database's clock, so the machines' clocks need
//! not agree.
//!
//! The pools re-open connections by themselves: each is checked before use,
//! so after a server restart the first calls fail with
//! [`StoreError::Unavailable`] (retryable) at worst, and the next ones work.

mod checkpoints;
mod coalesced;
mod error;
mod fused;
mod leases;
mod migrate;
mod progress;
mod rows;
mod tasks;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use troupe_core::store::StoreError;

pub(crate) use error::pg_error;
use writer::Writers;

/// Settings of a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The most connections the pool for reads opens (the writers have their own).
    pub max_connections: u32,
    /// How many writer tasks commit writes, each on its own connection; one
    /// task's writes all go to the same writer. Fewer writers make bigger
    /// batches, which cost the server less per write; more let batches
    /// overlap. (Measured on 2 cores, `troupe bench --llm mock` at
    /// concurrency 16: 1 and 2 writers were about as fast, 4 slower and with
    /// twice the server CPU per task.)
    pub writers: usize,
    /// The most writes one writer commits together.
    pub max_batch: usize,
    /// The connections the pool keeps open even when idle.
    pub min_connections: u32,
    /// How long a call waits for a connection (including opening one) before
    /// it fails with [`StoreError::Unavailable`]; also bounds the first connection.
    pub acquire_timeout: Duration,
    /// How long an unused connection stays open.
    pub idle_timeout: Option<Duration>,
    /// How long a connection is used before it is replaced.
    pub max_lifetime: Option<Duration>,
    /// The longest a statement may run before the server cancels it.
    pub statement_timeout: Option<Duration>,
    /// The name the server shows for these connections (`pg_stat_activity`).
    pub application_name: String,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            writers: 2,
            max_batch: 256,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            statement_timeout: Some(Duration::from_secs(30)),
            application_name: "troupe".to_owned(),
        }
    }
}

/// The ledgers, leases and checkpoints in one PostgreSQL database.
///
/// ```no_run
/// use troupe_core::store::TaskStore;
/// use troupe_core::task::TaskRecord;
/// use troupe_sql::{PostgresOptions, PostgresStore};
///
/// # async fn demo() -> Result<(), troupe_core::store::StoreError> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/troupe", PostgresOptions::default()).await?;
/// let task = TaskRecord::new(troupe_core::TaskId::new(), "goal", troupe_core::time::now());
/// store.create_task(&task).await?;
/// assert_eq!(store.get_task(task.id).await?, Some(task));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// For reads, and for the rare writes that span many tasks.
    pool: PgPool,
    /// The connections of the writers, one each (apart, so reads never starve them).
    write_pool: PgPool,
    writers: Arc<Writers>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names, brings its schema
    /// up to date (one coordinator at a time, under an advisory lock), and
    /// opens a pool.
    ///
    /// Fails with [`StoreError::Unavailable`] when the server cannot be
    /// reached within `acquire_timeout`, [`StoreError::Migration`] when the
    /// schema is newer than this build knows, and [`StoreError::Backend`] for
    /// a malformed URL or a refused login.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?
            .application_name(&options.application_name);
        if let Some(timeout) = options.statement_timeout {
            connect = connect.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let target = describe(&connect);

        // One plain connection first: it reports why it cannot connect (the
        // pool would only say it timed out), and it runs the migrations.
        let mut conn = tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {target}: no answer within {:?}",
                options.acquire_timeout
            ))
        })?
        .map_err(|e| match pg_error(e) {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {m}"))
            }
            StoreError::Backend(m) => {
                StoreError::Backend(format!("cannot connect to PostgreSQL at {target}: {m}"))
            }
            other => other,
        })?;
        let migrated = migrate::apply(&mut conn).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
        migrated?;

        let pool = pool_options(&options, options.max_connections, options.min_connections)
            .connect_lazy_with(connect.clone());
        let writers = options.writers.max(1);
        // The writers run a dozen statements over and over, each keyed by
        // ids. Left to itself, the server keeps planning the coalesced ones
        // afresh for every run (custom plans over arrays of unknown length),
        // and planning costs more than running: so a generic plan, made once
        // per connection. Made while the tables are small (a new database),
        // it would scan them whole for good, hence no sequential scans: every
        // statement of a writer finds its rows by key.
        let write_connect = connect.options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
        ]);
        let write_pool = pool_options(&options, u32::try_from(writers).unwrap_or(u32::MAX), 0)
            .connect_lazy_with(write_connect);
        let writers = Arc::new(Writers::spawn(&write_pool, writers, options.max_batch));
        tracing::info!(target = %target, writers = writers.count(), "PostgreSQL store open");
        Ok(Self {
            pool,
            write_pool,
            writers,
        })
    }

    /// Closes every connection; calls after this fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
    }
}

/// The settings of a pool of at most `max` connections.
fn pool_options(options: &PostgresOptions, max: u32, min: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max.max(1))
        .min_connections(min)
        .acquire_timeout(options.acquire_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
        // Ping each connection before handing it out, so that after a
        // server restart dead connections are replaced instead of failing a call.
        .test_before_acquire(true)
}

/// `host:port/database`, for messages (never the password).
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options
            .get_database()
            .unwrap_or_else(|| options.get_username())
    )
}

/// A duration as a PostgreSQL interval, at its microsecond precision and
/// capped at a century (so that `now() + ttl` stays a valid timestamp).
pub(crate) fn interval(d: Duration) -> sqlx::postgres::types::PgInterval {
    const CENTURY_MICROS: i64 = 100 * 366 * 24 * 3600 * 1_000_000;
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros())
            .map_or(CENTURY_MICROS, |us| us.min(CENTURY_MICROS)),
    }
}
