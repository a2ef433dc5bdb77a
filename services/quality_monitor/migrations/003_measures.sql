-- Measures the way quality teams read them (issue 16): rebases.

-- A rebase: from ``period`` on, a provider's series of one metric and setting has new limits
-- (a known change). Recorded by the quality team (accepted), or proposed by the monitor
-- after a sustained shift and accepted (or rejected) by a person. Who and when, always.
CREATE TABLE rebases (
    ods_code    text NOT NULL,
    metric      text NOT NULL,
    setting     text NOT NULL,
    period      text NOT NULL CHECK (period ~ '^\d{4}-(0[1-9]|1[0-2])$'),
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    status      text NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected')),
    proposed_by text,                      -- 'quality-monitor' for the monitor's proposals
    proposed_at timestamptz,
    decided_by  text,                      -- who accepted (or rejected), or recorded it
    decided_at  timestamptz,
    PRIMARY KEY (ods_code, metric, setting, period),
    CHECK (status = 'proposed' OR (decided_by IS NOT NULL AND decided_at IS NOT NULL))
);
CREATE INDEX rebases_status ON rebases (status, ods_code);
