-- The schedule moves to the shared scheduler's table (shared/migrations/004_jobs.sql,
-- shared/scheduler.py). Its rows move with their ids, outcomes and attempts; `schedule`
-- stays as a view for operators' queries (kind = the job's name, concern_id = its subject).
INSERT INTO jobs (id, name, due_at, payload, subject, dedupe_key, done_at, outcome, attempts,
                  last_error, created_at)
SELECT id, kind, due_at, payload, concern_id::text, dedupe_key, done_at, outcome, attempts,
       last_error, created_at
  FROM schedule ORDER BY id;
SELECT setval(pg_get_serial_sequence('jobs', 'id'),
              GREATEST((SELECT max(id) FROM jobs), 1), (SELECT max(id) FROM jobs) IS NOT NULL);
DROP TABLE schedule;
CREATE VIEW schedule AS
SELECT id, due_at, name AS kind, payload, subject::uuid AS concern_id, dedupe_key, done_at,
       outcome, attempts, last_error, created_at
  FROM jobs;
