//! [`SqliteStore`]: the task and progress ledgers, task leases and checkpoints
//! in one SQLite file, the embedded default.
//!
//! Writes go through one writer thread with group commit (the `writer` module); reads
//! use a small pool of read-only connections on blocking threads. The database
//! runs in WAL mode, so readers (another `troupe tasks show`, say) never block
//! the writer. With `synchronous = NORMAL` (the default) a committed write
//! survives a crash of the process; `FULL` also survives a power cut.

mod checkpoints;
mod leases;
mod migrate;
mod progress;
mod rows;
mod tasks;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use troupe_core::TaskId;
use troupe_core::store::StoreError;

use writer::Writer;

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives a crash of the process, not of the machine (WAL mode default).
    #[default]
    Normal,
    /// Survives a power cut too; every commit waits for the disk.
    Full,
}

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Commit durability.
    pub synchronous: Synchronous,
    /// How long to wait for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// The most read connections kept open.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
        }
    }
}

/// The task and progress ledgers, task leases and checkpoints in one SQLite file.
///
/// ```
/// use troupe_core::store::TaskStore;
/// use troupe_core::task::TaskRecord;
/// use troupe_sql::SqliteStore;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open(&dir.path().join("troupe.db"), Default::default()).await.unwrap();
/// let task = TaskRecord::new(troupe_core::TaskId::new(), "goal", troupe_core::time::now());
/// store.create_task(&task).await.unwrap();
/// assert_eq!(store.get_task(task.id).await.unwrap(), Some(task));
/// # });
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    options: SqliteOptions,
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    steps: StepCache,
}

/// The next progress step of each task this process appended to, so that an
/// append is one plain `INSERT` (no `MAX(step)` lookup, which SQLite re-plans
/// on every run). Only the writer thread uses it; it is dropped whole when a
/// batch fails to commit, and an entry is re-read when another process took
/// the step (the primary key refuses a duplicate).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepCache(Arc<Mutex<HashMap<TaskId, u64>>>);

/// Tasks remembered before the cache starts over (entries are re-read on demand).
const MAX_CACHED_TASKS: usize = 10_000;

impl StepCache {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, u64>> {
        // Only the writer thread takes this lock; a poisoned map is just a cache, so clear it.
        self.0.lock().unwrap_or_else(|poisoned| {
            let mut map = poisoned.into_inner();
            map.clear();
            map
        })
    }

    /// Remembers that `task`'s next step is `next`.
    pub(crate) fn set(&self, task: TaskId, next: u64) {
        let mut map = self.lock();
        if map.len() >= MAX_CACHED_TASKS && !map.contains_key(&task) {
            map.clear();
        }
        map.insert(task, next);
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let opened = {
            let path = path.clone();
            let options = options.clone();
            tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
                let mut conn = open_connection(&path, &options, false)?;
                migrate::apply(&mut conn)?;
                Ok(conn)
            })
            .await
            .map_err(|e| StoreError::Backend(format!("opening the database panicked: {e}")))??
        };
        let steps = StepCache::default();
        let forget = steps.clone();
        let on_rollback = Box::new(move || forget.lock().clear());
        let (writer, thread) =
            Writer::spawn(opened, "troupe-sqlite-writer".to_owned(), on_rollback)?;
        Ok(Self {
            path,
            options,
            writer,
            readers: Arc::new(Mutex::new(Vec::new())),
            thread: Mutex::new(Some(thread)),
            steps,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for every write to finish and stops the writer thread. Writes
    /// after this fail with [`StoreError::Closed`].
    pub async fn close(self) {
        let Self { writer, thread, .. } = self;
        drop(writer);
        let handle = thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // Joining blocks until the queue is drained; keep it off the async threads.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Runs a read on a pooled read-only connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_connection(&path, &options, true)?,
            };
            let out = f(&conn);
            let mut pool = readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pool.len() < options.read_connections {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a database read panicked: {e}")))?
    }
}

fn open_connection(
    path: &Path,
    options: &SqliteOptions,
    read_only: bool,
) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot open SQLite database {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| sql_error(&e))?;
    conn.set_prepared_statement_cache_capacity(64);
    let synchronous = match options.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    let pragmas = if read_only {
        "PRAGMA foreign_keys = ON;".to_owned()
    } else {
        format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;"
        )
    };
    conn.execute_batch(&pragmas).map_err(|e| sql_error(&e))?;
    Ok(conn)
}

/// Classifies a SQLite error: busy and locked are worth a retry.
pub(crate) fn sql_error(e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Whether `e` is the violation of a foreign key (a row pointing at a missing task).
pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// Whether `e` is the violation of a primary key (an id already taken).
pub(crate) fn is_primary_key_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}
