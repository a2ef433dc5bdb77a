-- The reviews' schedule moves to the shared scheduler's table (shared/migrations/004_jobs.sql,
-- shared/scheduler.py) as recurring jobs keyed by their name; `schedule` stays as a view
-- for operators' queries.
INSERT INTO jobs (name, due_at, dedupe_key, recurring, last_run_at, last_result)
SELECT job, due_at, job, true, last_run_at, last_result FROM schedule ORDER BY job;
DROP TABLE schedule;
CREATE VIEW schedule AS
SELECT name AS job, due_at, last_run_at, last_result FROM jobs WHERE recurring;
