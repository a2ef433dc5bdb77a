-- The quarantine holds raw bodies, which hold personal data by definition (issue 14): a body
-- is deleted when its row is discarded, and by the purge once the retention has passed
-- (CAREWATCH_QUARANTINE_RETENTION_DAYS, 30 by default). The row stays without it (the
-- reasons, the feed, the status), so that a feed asking what became of its submission is
-- still answered.
ALTER TABLE quarantine ALTER COLUMN body DROP NOT NULL;
ALTER TABLE quarantine ADD COLUMN body_deleted_at timestamptz;
-- The purge's work list: rows that still hold a body, oldest first.
CREATE INDEX quarantine_with_body ON quarantine (received_at) WHERE body IS NOT NULL;
-- An open row whose body the purge deleted is 'expired': nothing is left to correct.
ALTER TABLE quarantine DROP CONSTRAINT quarantine_status_check;
ALTER TABLE quarantine ADD CONSTRAINT quarantine_status_check
    CHECK (status IN ('open', 'resubmitted', 'discarded', 'expired'));
