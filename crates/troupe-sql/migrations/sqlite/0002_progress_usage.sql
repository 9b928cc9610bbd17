-- The LLM tokens each progress step spent (NULL for steps that made no LLM call),
-- so that usage can be summed per agent as well as per task.
ALTER TABLE progress_entries ADD COLUMN prompt_tokens INTEGER;
ALTER TABLE progress_entries ADD COLUMN completion_tokens INTEGER;
