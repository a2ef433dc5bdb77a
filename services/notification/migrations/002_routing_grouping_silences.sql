-- Routing, Alertmanager-style grouping and silences.

-- A notification is now one of: an event told at once ('event'), a group's notification
-- ('group'), or a daily digest ('digest'); a silenced one is kept as 'suppressed'.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'suppressed'));
ALTER TABLE notifications
    ADD COLUMN kind       text NOT NULL DEFAULT 'event' CHECK (kind IN ('event', 'group', 'digest')),
    ADD COLUMN route      text,
    ADD COLUMN silence_id uuid;
CREATE INDEX notifications_status ON notifications (status, created_at DESC);

ALTER TABLE deliveries DROP CONSTRAINT deliveries_outcome_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_outcome_check
    CHECK (outcome IN ('sent', 'retry', 'failed', 'suppressed', 'requeued'));

-- One group per route, recipient and group_by values. Its timer is durable: the flusher of
-- any replica takes due groups with FOR UPDATE SKIP LOCKED.
CREATE TABLE alert_groups (
    group_id        uuid PRIMARY KEY,
    group_key       text NOT NULL UNIQUE,
    route           text NOT NULL,
    delivery        text NOT NULL CHECK (delivery IN ('grouped', 'digest')),
    channel         text NOT NULL,
    recipient       text NOT NULL,
    labels          jsonb NOT NULL,
    next_flush_at   timestamptz,            -- NULL: nothing due until an alert changes
    last_flushed_at timestamptz,
    flushes         int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL
);
CREATE INDEX alert_groups_due ON alert_groups (next_flush_at) WHERE next_flush_at IS NOT NULL;

-- The alerts of a group, de-duplicated by what they are about (a concern, an action).
CREATE TABLE group_alerts (
    group_id         uuid NOT NULL REFERENCES alert_groups ON DELETE CASCADE,
    alert_key        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('firing', 'resolved')),
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    version          int NOT NULL DEFAULT 1,
    notified_version int NOT NULL DEFAULT 0,
    first_seen_at    timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (group_id, alert_key)
);
CREATE INDEX group_alerts_key ON group_alerts (alert_key);

-- Silences: never deleted; expiring one records who and why.
CREATE TABLE silences (
    silence_id    uuid PRIMARY KEY,
    matchers      jsonb NOT NULL CHECK (matchers <> '{}'::jsonb),
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    created_by    text NOT NULL,
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expired_at    timestamptz,
    expired_by    text,
    expire_reason text,
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_current ON silences (ends_at) WHERE expired_at IS NULL;
