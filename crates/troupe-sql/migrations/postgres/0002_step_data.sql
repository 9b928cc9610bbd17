-- What a program may need to know of a step beyond its detail (JSON text: troupe_core::ledger::StepData).
ALTER TABLE progress_entries ADD COLUMN data text;
