-- What quality-monitor knows of accepted feedback (the input of trend rules).
CREATE TABLE feedback (
    feedback_id   uuid PRIMARY KEY,
    submission_id uuid NOT NULL,
    ods_code      text NOT NULL,
    site_code     text,
    kind          text NOT NULL,
    theme         text,
    occurred_on   date NOT NULL,
    content       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_provider_theme ON feedback (ods_code, kind, theme, occurred_on);

-- Concerns. One OPEN concern per fingerprint (provider + rule + theme): enforced here, so
-- concurrent replicas cannot raise duplicates.
CREATE TABLE concerns (
    concern_id    uuid PRIMARY KEY,
    fingerprint   text NOT NULL,
    ods_code      text NOT NULL,
    provider      jsonb NOT NULL,
    rule          text NOT NULL,
    theme         text NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('low', 'moderate', 'high', 'serious')),
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    reason        text NOT NULL,
    figures       jsonb NOT NULL DEFAULT '{}',
    evidence      jsonb NOT NULL DEFAULT '[]',
    raised_at     timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE UNIQUE INDEX concerns_one_open_per_fingerprint ON concerns (fingerprint)
    WHERE status = 'open';
CREATE INDEX concerns_provider ON concerns (ods_code, status);
