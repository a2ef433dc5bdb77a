-- Replies to a publisher's reply_to queue travel through the outbox too, but such a queue
-- may be gone by the time the relay publishes: those rows are published without the
-- mandatory flag (a returned message would otherwise fail the relay's batch for ever).
ALTER TABLE outbox
    ADD COLUMN mandatory      boolean NOT NULL DEFAULT true,
    ADD COLUMN correlation_id text;
