-- Every notification is recorded before it is sent: one row per (event, recipient, channel),
-- so sending is idempotent whatever the redeliveries.
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    source_event_id uuid NOT NULL,
    event_type      text NOT NULL,
    channel         text NOT NULL,
    recipient       text NOT NULL,
    subject         text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    message_id      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (source_event_id, recipient, channel)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';

-- The delivery log: every attempt and its outcome.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications,
    attempt         int NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed')),
    detail          text,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_notification ON deliveries (notification_id);

-- Rejected submissions, kept for the feed digest.
CREATE TABLE rejections (
    submission_id uuid PRIMARY KEY,
    feed_user     text,
    ods_code      text,
    reasons       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
