//! Schema migrations, one ordered list per dialect.
//!
//! Each dialect keeps its own SQL files under `migrations/<dialect>/`; they are
//! compiled into the binary. A store applies the ones its database lacks at
//! start, and refuses a database whose schema is newer than it knows.

/// One migration: a version (from 1, gap-free), a name, and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The schema version it brings the database to.
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The SQLite migrations.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "progress_usage",
        sql: include_str!("../migrations/sqlite/0002_progress_usage.sql"),
    },
    Migration {
        version: 3,
        name: "leases_checkpoints",
        sql: include_str!("../migrations/sqlite/0003_leases_checkpoints.sql"),
    },
    Migration {
        version: 4,
        name: "step_data",
        sql: include_str!("../migrations/sqlite/0004_step_data.sql"),
    },
];

/// The PostgreSQL migrations.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "step_data",
        sql: include_str!("../migrations/postgres/0002_step_data.sql"),
    },
];

/// The table that records applied migrations (same name in every dialect).
pub const TABLE: &str = "troupe_migrations";
