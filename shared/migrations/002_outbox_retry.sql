-- A row the broker keeps refusing (its exchange deleted, say) must not hold up the rows
-- behind it: it is retried later with backoff, and `carewatch outbox status` shows it.
ALTER TABLE outbox
    ADD COLUMN attempts        int NOT NULL DEFAULT 0,
    ADD COLUMN last_error      text,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();
