-- Remedial meetings the way a quality team runs them: one per provider (many concerns on its
-- agenda), the people of the commissioner's side with their capacity and unavailability,
-- coalesced announcements, attendees' replies, the Rapid Quality Review.

-- The commissioner's people: quality leads (and deputies), lay members, safeguarding leads,
-- the head of quality. Each with working hours, a daily cap and a buffer between meetings.
CREATE TABLE people (
    email                text PRIMARY KEY CHECK (email = lower(email)),
    name                 text NOT NULL,
    role                 text NOT NULL CHECK (role IN ('quality lead', 'deputy quality lead',
                         'lay member', 'safeguarding lead', 'head of quality')),
    works_from           time NOT NULL DEFAULT '09:00',
    works_until          time NOT NULL DEFAULT '17:00',
    working_days         int[] NOT NULL DEFAULT '{0,1,2,3,4}',  -- Monday = 0
    max_meetings_per_day int NOT NULL DEFAULT 3 CHECK (max_meetings_per_day > 0),
    buffer_minutes       int NOT NULL DEFAULT 30 CHECK (buffer_minutes >= 0),
    active               boolean NOT NULL DEFAULT true,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (works_until > works_from)
);

-- Leave and other commitments (entered by hand or imported from iCalendar free/busy).
CREATE TABLE unavailability (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL REFERENCES people ON UPDATE CASCADE,
    during     tstzrange NOT NULL,
    reason     text NOT NULL,
    source     text NOT NULL DEFAULT 'manual',
    source_uid text,  -- an imported period's UID: a re-import replaces it
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (email, source_uid)
);
CREATE INDEX unavailability_person ON unavailability USING gist (email, during);

-- A meeting gathers its provider's concerns (meeting_concerns: each concern on one agenda);
-- concern_id stays as the concern that first booked it.
ALTER TABLE meetings DROP CONSTRAINT meetings_concern_id_key;
ALTER TABLE meetings
    ADD COLUMN kind                text NOT NULL DEFAULT 'remedial'
                                   CHECK (kind IN ('remedial', 'rapid_quality_review')),
    ADD COLUMN url                 text,
    ADD COLUMN breach_reason       text,
    -- Changes not yet announced (coalesced into one meeting.rescheduled.v1), and the start
    -- as last announced.
    ADD COLUMN pending_changes     jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN announced_starts_at timestamptz,
    -- Attendees' replies (iTIP REPLY), by e-mail: {"partstat", "at"}.
    ADD COLUMN rsvp                jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN proposed_starts_at  timestamptz;
UPDATE meetings SET announced_starts_at = starts_at;
CREATE INDEX meetings_provider_open ON meetings (ods_code, starts_at) WHERE status = 'scheduled';

CREATE TABLE meeting_concerns (
    concern_id uuid PRIMARY KEY REFERENCES concerns,
    meeting_id uuid NOT NULL REFERENCES meetings,
    added_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meeting_concerns_meeting ON meeting_concerns (meeting_id);
INSERT INTO meeting_concerns (concern_id, meeting_id, added_at)
    SELECT concern_id, meeting_id, created_at FROM meetings;

-- A person's booking blocks their buffer after the meeting too: the exclusion constraint
-- then refuses a meeting inside anyone's buffer, as it refuses an overlap.
ALTER TABLE bookings ADD COLUMN blocked tstzrange;
UPDATE bookings SET blocked = during;
ALTER TABLE bookings ALTER COLUMN blocked SET NOT NULL,
    ADD CONSTRAINT bookings_buffer EXCLUDE USING gist (attendee WITH =, blocked WITH &&);
