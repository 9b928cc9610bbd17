-- Task leases and coordinator checkpoints.
-- A task's lease lives on its row: the coordinator driving it (`owner`, NULL when
-- nobody does), the fencing epoch raised by every acquisition (0: never leased),
-- and when the lease lapses (milliseconds since the Unix epoch).
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN lease_until INTEGER;

-- Finding orphaned tasks: only unfinished ones, oldest (smallest id) first.
-- The lease columns stay out of it, so a renewal does not rewrite the index.
CREATE INDEX tasks_open ON tasks (id) WHERE status NOT IN ('completed', 'failed', 'cancelled');

-- A coordinator's state for a task, numbered 1, 2, ... per task; only the
-- newest few are kept.
CREATE TABLE checkpoints (
    task_id TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    epoch   INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    state   TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
