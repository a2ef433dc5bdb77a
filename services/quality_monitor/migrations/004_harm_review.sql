-- The quality team's review of possible serious risks (rule possible_serious_risk): one row
-- per concern marked for review; pending until someone confirms or dismisses it.
CREATE TABLE reviews (
    concern_id   uuid PRIMARY KEY REFERENCES concerns (concern_id),
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'confirmed', 'dismissed')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    decided_at   timestamptz,
    decided_by   text,
    reason       text,
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (status <> 'dismissed' OR length(reason) > 0)
);
CREATE INDEX reviews_pending ON reviews (requested_at) WHERE status = 'pending';

-- Who did what to a review, and when (append only).
CREATE TABLE review_audit (
    entry_id   bigserial PRIMARY KEY,
    concern_id uuid NOT NULL,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN ('requested', 'confirmed', 'dismissed')),
    detail     text
);
CREATE INDEX review_audit_concern ON review_audit (concern_id, at);

-- The redacted free text behind each decided review, with what the pipeline read in it and
-- the team's verdict: material for the evaluation corpus (tests/data/harm).
CREATE TABLE harm_evaluation (
    entry_id    bigserial PRIMARY KEY,
    concern_id  uuid NOT NULL,
    feedback_id uuid NOT NULL,
    text        text NOT NULL,
    mentions    jsonb NOT NULL DEFAULT '[]',
    decision    text NOT NULL CHECK (decision IN ('confirmed', 'dismissed')),
    reason      text,
    decided_by  text NOT NULL,
    decided_at  timestamptz NOT NULL,
    UNIQUE (concern_id, feedback_id)
);
