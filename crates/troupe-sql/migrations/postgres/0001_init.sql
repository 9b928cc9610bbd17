-- Troupe's ledgers, leases and checkpoints, PostgreSQL dialect.
-- Task ids are UUIDv7, so ordering by id is ordering by submission time.
-- Integers are bigint throughout (the domain's u32/u64 values fit).

CREATE TABLE tasks (
    id                uuid        PRIMARY KEY,
    goal              text        NOT NULL,
    status            text        NOT NULL,
    result            text,
    error             text,
    facts             text[]      NOT NULL DEFAULT '{}',
    plan_revision     bigint      NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    -- The last progress step and checkpoint numbers handed out: raising one
    -- locks the row, which numbers concurrent appends without gaps or clashes.
    last_step         bigint      NOT NULL DEFAULT 0,
    last_checkpoint   bigint      NOT NULL DEFAULT 0,
    -- The lease: the coordinator driving the task (NULL: nobody), the fencing
    -- epoch raised by every acquisition (0: never leased), and when it lapses.
    owner             text,
    lease_epoch       bigint      NOT NULL DEFAULT 0,
    lease_until       timestamptz
-- Room on each page for the frequent updates of unindexed columns (steps,
-- renewals) to stay heap-only.
) WITH (fillfactor = 80);

-- Listing by status, newest first.
CREATE INDEX tasks_by_status ON tasks (status, id);

-- Finding orphaned tasks: only unfinished ones, oldest first.
CREATE INDEX tasks_open ON tasks (id) WHERE status NOT IN ('completed', 'failed', 'cancelled');

CREATE TABLE subtasks (
    task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    id          text        NOT NULL,
    position    bigint      NOT NULL,
    revision    bigint      NOT NULL,
    role        text        NOT NULL,
    title       text        NOT NULL,
    instruction text        NOT NULL,
    depends_on  text[]      NOT NULL DEFAULT '{}',
    status      text        NOT NULL,
    attempts    bigint      NOT NULL DEFAULT 0,
    result      text,
    last_error  text,
    agent       text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (task_id, id),
    -- Reading a task's plan in order.
    UNIQUE (task_id, position)
);

CREATE TABLE progress_entries (
    task_id           uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step              bigint      NOT NULL,
    at                timestamptz NOT NULL,
    agent             text        NOT NULL,
    subtask_id        text,
    attempt           bigint,
    event             text        NOT NULL,
    detail            text        NOT NULL,
    -- The LLM tokens the step spent (NULL for steps that made no LLM call).
    prompt_tokens     bigint,
    completion_tokens bigint,
    PRIMARY KEY (task_id, step)
);

-- A coordinator's state for a task; only the newest few are kept.
CREATE TABLE checkpoints (
    task_id uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq     bigint      NOT NULL,
    epoch   bigint      NOT NULL,
    step    bigint      NOT NULL,
    state   jsonb       NOT NULL,
    at      timestamptz NOT NULL,
    PRIMARY KEY (task_id, seq)
);
