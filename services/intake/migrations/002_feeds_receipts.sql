-- API keys of feeds that post over HTTP: only a SHA-256 of the key is kept (the key is a
-- high-entropy random token, shown once when it is created).
ALTER TABLE feeds
    ADD COLUMN api_key_sha256     text UNIQUE,
    ADD COLUMN api_key_created_at timestamptz;

-- One receipt per submission admitted, whatever its outcome: how the bulk loader and an
-- HTTP or AMQP feed learn what became of a submission (a duplicate leaves no other trace),
-- and how a replay of the very same submission is recognised.
CREATE TABLE receipts (
    submission_id      uuid PRIMARY KEY,
    feed_user          text,
    outcome            text NOT NULL CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    feedback_id        uuid,
    ods_code           text,
    provider_record_id text,
    received_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX receipts_feed ON receipts (feed_user, received_at);
INSERT INTO receipts (submission_id, feed_user, outcome, feedback_id, ods_code,
                      provider_record_id, received_at)
SELECT submission_id, feed_user, 'accepted', feedback_id, ods_code, provider_record_id,
       received_at FROM feedback
ON CONFLICT DO NOTHING;
INSERT INTO receipts (submission_id, feed_user, outcome, received_at)
SELECT submission_id, feed_user, 'rejected', received_at FROM quarantine
ON CONFLICT DO NOTHING;

-- Quarantine: the full size of a body kept only in part (an oversized one), the reply
-- queue of the publisher, and the links between a rejected submission and its resubmission.
ALTER TABLE quarantine
    ADD COLUMN body_size       int,
    ADD COLUMN reply_to        text,
    ADD COLUMN correlation_id  text,
    ADD COLUMN resubmission_of uuid,
    ADD COLUMN resubmitted_as  uuid,
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN resolved_by     text;
CREATE INDEX quarantine_feed ON quarantine (feed_user, received_at);
