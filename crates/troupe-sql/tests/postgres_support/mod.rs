//! A scratch PostgreSQL database per test, so tests (and parallel runs of
//! them) never see each other's rows, and every test starts from an empty
//! schema its store migrates.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Scratch databases are named `troupe_t_<unix seconds>_<pid>_<n>`.
const PREFIX: &str = "troupe_t_";

/// Scratch databases older than this are left-overs of failed runs; dropped.
const STALE_SECS: u64 = 3600;

/// A database created for one test; [`ScratchDb::drop_now`] removes it.
pub(crate) struct ScratchDb {
    /// The server's URL with the scratch database in it.
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `url` with its database replaced by `name`.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{name}{query}")
}

impl ScratchDb {
    /// A new empty database on the test server, or `None` (skipped) when
    /// there is no server outside CI.
    pub(crate) async fn create(test: &str) -> Option<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin_url = troupe_testkit::services::postgres_url(test).await?;
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        drop_stale(&mut admin).await;
        let name = format!(
            "{PREFIX}{}_{}_{}",
            unix_secs(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        Some(Self {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }

    /// Drops the database (closing whatever connections are left in it).
    pub(crate) async fn drop_now(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
    }
}

/// Drops the scratch databases of runs that ended over an hour ago without
/// dropping theirs (a failed assertion skips `drop_now`).
async fn drop_stale(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'troupe\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap();
    let now = unix_secs();
    for name in names {
        let born = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if born.is_some_and(|born| born + STALE_SECS < now) {
            // Another run may be dropping it too: ignore failures.
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}
