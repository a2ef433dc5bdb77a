-- Urgent events (a complaint, a safeguarding concern, a GP alert accepted) are published
-- before routine ones: the relay claims by priority, then in commit order.
ALTER TABLE outbox ADD COLUMN priority smallint NOT NULL DEFAULT 0;
CREATE INDEX outbox_claim_order ON outbox (priority DESC, seq);
