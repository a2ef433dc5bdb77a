-- The durable schedule of time-driven work (shared/scheduler.py): one table per service
-- schema, claimed with FOR UPDATE SKIP LOCKED so each due job runs on one replica.
-- One-off jobs are marked done; a recurring job (keyed by its name) is due again.
CREATE TABLE jobs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,             -- the handler that runs it
    due_at      timestamptz NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    subject     text,                      -- what it is about: its jobs are cancelled together
    dedupe_key  text UNIQUE,               -- a second job for the same purpose is not added
    recurring   boolean NOT NULL DEFAULT false,
    done_at     timestamptz,
    outcome     text,
    attempts    int NOT NULL DEFAULT 0,
    last_error  text,
    last_run_at timestamptz,
    last_result jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE done_at IS NULL;
CREATE INDEX jobs_subject ON jobs (subject) WHERE done_at IS NULL;
