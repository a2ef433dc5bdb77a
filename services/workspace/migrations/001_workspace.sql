-- The workspace's own schema: a read model built from the domain events it consumes, what
-- the workspace itself owns (comments, evidence files, sessions) and its audit trail.
-- Nothing here is read by another service, and the workspace reads no other service's tables.

CREATE TABLE providers (
    ods_code      text PRIMARY KEY,
    name          text NOT NULL,
    provider_type text NOT NULL,
    seen_at       timestamptz NOT NULL
);

-- One row per concern, as the last concern.* event said (events may arrive out of order:
-- ``version_at`` is the time of the event the row reflects; an older one never overwrites it).
CREATE TABLE concerns (
    concern_id    uuid PRIMARY KEY,
    ods_code      text NOT NULL,
    rule          text NOT NULL,
    theme         text NOT NULL,
    severity      text NOT NULL,
    severity_rank int NOT NULL,
    reason        text NOT NULL,
    figures       jsonb NOT NULL DEFAULT '{}',
    evidence      jsonb NOT NULL DEFAULT '[]',
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'closed')),
    level         text,
    raised_at     timestamptz NOT NULL,
    version_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    ended_reason  text
);
CREATE INDEX concerns_open ON concerns (status, severity_rank DESC, raised_at DESC);
CREATE INDEX concerns_provider ON concerns (ods_code, raised_at DESC);

CREATE TABLE meetings (
    meeting_id  uuid PRIMARY KEY,
    concern_id  uuid NOT NULL,
    ods_code    text NOT NULL,
    title       text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    location    text NOT NULL,
    deadline    timestamptz NOT NULL,
    breach      boolean NOT NULL,
    severity    text NOT NULL,
    agenda      jsonb NOT NULL,
    attendees   jsonb NOT NULL,
    sequence    int NOT NULL,
    status      text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'held', 'cancelled')),
    outcome     text,
    cancel_reason text
);
CREATE INDEX meetings_starts ON meetings (starts_at);
CREATE INDEX meetings_provider ON meetings (ods_code, starts_at);
CREATE INDEX meetings_concern ON meetings (concern_id);

-- Remedial actions: from action.* events and from the answers of escalation's API to the
-- commands the workspace sends (escalation publishes no event when a plan is recorded).
CREATE TABLE actions (
    action_id   uuid PRIMARY KEY,
    concern_id  uuid NOT NULL,
    ods_code    text NOT NULL,
    description text NOT NULL,
    owner       text NOT NULL,
    due_on      date NOT NULL,
    status      text NOT NULL,
    evidence_of_completion text,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX actions_concern ON actions (concern_id);
CREATE INDEX actions_due ON actions (status, due_on);

CREATE TABLE visits (
    visit_id   uuid PRIMARY KEY,
    ods_code   text NOT NULL,
    visit_kind text NOT NULL,
    due_on     date NOT NULL,
    reason     text NOT NULL,
    concern_id uuid
);
CREATE INDEX visits_provider ON visits (ods_code, due_on);

-- What happened to a concern, oldest first: every event about it and every command sent.
CREATE TABLE timeline (
    entry_id   bigserial PRIMARY KEY,
    concern_id uuid NOT NULL,
    ods_code   text NOT NULL,
    at         timestamptz NOT NULL,
    what       text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    actor      text NOT NULL DEFAULT 'carewatch'
);
CREATE INDEX timeline_concern ON timeline (concern_id, at);

-- Owned by the workspace: comments of the lay member and replies of the provider.
CREATE TABLE comments (
    comment_id uuid PRIMARY KEY,
    concern_id uuid NOT NULL,
    meeting_id uuid,
    ods_code   text NOT NULL,
    author     text NOT NULL,
    role       text NOT NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
    at         timestamptz NOT NULL
);
CREATE INDEX comments_concern ON comments (concern_id, at);

-- Evidence of completion uploaded by a provider: kept in the database (every replica sees
-- it, backups include it), type-checked by content, size-limited, served as an attachment.
CREATE TABLE evidence_files (
    file_id      uuid PRIMARY KEY,
    action_id    uuid NOT NULL,
    concern_id   uuid NOT NULL,
    ods_code     text NOT NULL,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size_bytes   int NOT NULL,
    sha256       text NOT NULL,
    data         bytea NOT NULL,
    uploaded_by  text NOT NULL,
    uploaded_at  timestamptz NOT NULL
);
CREATE INDEX evidence_action ON evidence_files (action_id);

-- Signed-in sessions: the cookie holds a random id; only its SHA-256 is kept here.
CREATE TABLE sessions (
    session_sha256 bytea PRIMARY KEY,
    account        text NOT NULL,
    csrf_token     text NOT NULL,
    method         text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- OpenID Connect sign-ins in flight (state -> nonce, where to go after).
CREATE TABLE oidc_states (
    state      text PRIMARY KEY,
    nonce      text NOT NULL,
    next_path  text NOT NULL,
    created_at timestamptz NOT NULL
);

-- Every action of a signed-in person, with who did it.
CREATE TABLE audit_log (
    entry_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL DEFAULT '',
    outcome  text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit_log (at);
