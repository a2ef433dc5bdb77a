-- A provider has one remedial meeting at a time and every concern of the provider joins its
-- agenda (escalation's meeting.* events carry them all in ``concern_ids``): the concerns each
-- meeting is about. A link is never removed, so a concern keeps its meeting in its history.
CREATE TABLE meeting_concerns (
    meeting_id uuid NOT NULL,
    concern_id uuid NOT NULL,
    joined_at  timestamptz NOT NULL,
    PRIMARY KEY (concern_id, meeting_id)
);
CREATE INDEX meeting_concerns_meeting ON meeting_concerns (meeting_id);

INSERT INTO meeting_concerns (meeting_id, concern_id, joined_at)
SELECT meeting_id, concern_id, starts_at FROM meetings ON CONFLICT DO NOTHING;

-- The meeting that agreed an action (escalation's answer says; its events do not): the
-- action plan a meeting agreed shows on every concern of its agenda.
ALTER TABLE actions ADD COLUMN meeting_id uuid;
CREATE INDEX actions_meeting ON actions (meeting_id);

-- The review queue: open possible serious risks, oldest first.
CREATE INDEX concerns_review ON concerns (raised_at)
    WHERE rule = 'possible_serious_risk' AND status = 'open';
