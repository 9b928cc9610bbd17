-- Troupe's ledgers, SQLite dialect.
-- Times are milliseconds since the Unix epoch; ids are text (task ids are UUIDv7,
-- so ordering by id is ordering by submission time).

CREATE TABLE tasks (
    id                TEXT    PRIMARY KEY NOT NULL,
    goal              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    result            TEXT,
    error             TEXT,
    facts             TEXT    NOT NULL DEFAULT '[]',
    plan_revision     INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER
) WITHOUT ROWID;

-- Listing by status, newest first.
CREATE INDEX tasks_by_status ON tasks (status, id);

CREATE TABLE subtasks (
    task_id     TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    id          TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    role        TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    instruction TEXT    NOT NULL,
    depends_on  TEXT    NOT NULL DEFAULT '[]',
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    last_error  TEXT,
    agent       TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, id)
) WITHOUT ROWID;

-- Reading a task's plan in order.
CREATE UNIQUE INDEX subtasks_by_position ON subtasks (task_id, position);

CREATE TABLE progress_entries (
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step       INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    agent      TEXT    NOT NULL,
    subtask_id TEXT,
    attempt    INTEGER,
    event      TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    PRIMARY KEY (task_id, step)
) WITHOUT ROWID;
