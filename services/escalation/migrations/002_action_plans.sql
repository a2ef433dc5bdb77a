-- Action plans, the escalation ladder, visits, the CQRM calendar, the durable schedule and
-- the audit trail.

-- The concern's place on the ladder and in its life: open, closed (by the quality team,
-- actions complete), resolved (announced by quality-monitor).
ALTER TABLE concerns
    ADD COLUMN fingerprint text,
    ADD COLUMN figures     jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN raised_at   timestamptz,
    ADD COLUMN level       text,
    ADD COLUMN level_since timestamptz,
    ADD COLUMN closed_at   timestamptz,
    ADD COLUMN resolved_at timestamptz,
    ADD CONSTRAINT concerns_status CHECK (status IN ('open', 'closed', 'resolved'));
CREATE INDEX concerns_provider_theme ON concerns (ods_code, theme, raised_at);

-- What the meeting decided, and when it changed.
ALTER TABLE meetings
    ADD COLUMN outcome      text,
    ADD COLUMN held_at      timestamptz,
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now();

-- Each moderate concern is an item on one CQRM of its provider (the recurring meeting's
-- start); an item leaves the agenda when its concern is resolved or moves up to a meeting.
ALTER TABLE cqrm_agenda
    ADD COLUMN cqrm_at    timestamptz,
    ADD COLUMN status     text NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'withdrawn', 'moved_to_meeting')),
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX cqrm_agenda_meeting ON cqrm_agenda (ods_code, cqrm_at);

-- The action plan agreed with the provider: each remedial action with its owner, due date
-- and the evidence that it was done.
CREATE TABLE actions (
    action_id              uuid PRIMARY KEY,
    concern_id             uuid NOT NULL REFERENCES concerns,
    meeting_id             uuid REFERENCES meetings,
    description            text NOT NULL,
    owner                  text NOT NULL,
    due_on                 date NOT NULL,
    status                 text NOT NULL DEFAULT 'open'
                           CHECK (status IN ('open', 'overdue', 'completed')),
    overdue_since          date,
    evidence_of_completion text,
    completed_at           timestamptz,
    completed_by           text,
    created_by             text NOT NULL,
    created_at             timestamptz NOT NULL,
    CHECK ((status = 'completed') = (completed_at IS NOT NULL))
);
CREATE INDEX actions_concern ON actions (concern_id);
CREATE INDEX actions_status ON actions (status, due_on);

-- The rungs each concern reached, once each (the primary key makes a second climb to the
-- same rung by another replica a no-op).
CREATE TABLE ladder_steps (
    concern_id uuid NOT NULL REFERENCES concerns,
    level      text NOT NULL,
    at         timestamptz NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (concern_id, level)
);

-- Insight visits (persistent concerns, or a visit report received) and their re-visits.
CREATE TABLE visits (
    visit_id         uuid PRIMARY KEY,
    ods_code         text NOT NULL,
    provider         jsonb NOT NULL,
    visit_kind       text NOT NULL CHECK (visit_kind IN ('insight_visit', 'revisit')),
    theme            text,
    concern_id       uuid,
    due_on           date NOT NULL,
    status           text NOT NULL DEFAULT 'planned'
                     CHECK (status IN ('planned', 'held', 'cancelled')),
    visited_on       date,
    follows_visit_id uuid REFERENCES visits,
    feedback_id      uuid UNIQUE,  -- the visit report that showed it was held
    reason           text NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX visits_provider ON visits (ods_code, status, due_on);
-- One re-visit per visit, whatever the number of replicas or redeliveries.
CREATE UNIQUE INDEX visits_one_revisit ON visits (follows_visit_id) WHERE follows_visit_id IS NOT NULL;

-- Time-driven work (reminders, overdue checks, ladder reviews, re-visits): durable, claimed
-- with FOR UPDATE SKIP LOCKED by whichever replica's tick comes first.
CREATE TABLE schedule (
    id          bigserial PRIMARY KEY,
    due_at      timestamptz NOT NULL,
    kind        text NOT NULL,
    payload     jsonb NOT NULL,
    concern_id  uuid,
    dedupe_key  text UNIQUE,
    done_at     timestamptz,
    outcome     text,
    attempts    int NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedule_due ON schedule (due_at) WHERE done_at IS NULL;
CREATE INDEX schedule_concern ON schedule (concern_id) WHERE done_at IS NULL;

-- Everything the provider, the commissioner and the service did about each concern.
-- Append-only: updates, deletes and truncation are refused.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    concern_id  uuid,
    ods_code    text NOT NULL,
    at          timestamptz NOT NULL,
    party       text NOT NULL CHECK (party IN ('provider', 'commissioner', 'system')),
    actor       text NOT NULL,
    action      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    event_id    uuid,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_concern ON audit_log (concern_id, id);
CREATE INDEX audit_log_provider ON audit_log (ods_code, id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'escalation.audit_log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
