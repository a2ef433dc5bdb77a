CREATE EXTENSION IF NOT EXISTS btree_gist;

-- escalation's view of each concern, as last announced by quality-monitor.
CREATE TABLE concerns (
    concern_id  uuid PRIMARY KEY,
    ods_code    text NOT NULL,
    provider    jsonb NOT NULL,
    rule        text NOT NULL,
    theme       text NOT NULL,
    severity    text NOT NULL,
    reason      text NOT NULL,
    evidence    jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'open',
    action      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Remedial-action meetings: at most one per concern.
CREATE TABLE meetings (
    meeting_id       uuid PRIMARY KEY,
    concern_id       uuid NOT NULL UNIQUE REFERENCES concerns,
    ods_code         text NOT NULL,
    severity         text NOT NULL,
    title            text NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    deadline         timestamptz NOT NULL,
    breach           boolean NOT NULL,
    location         text NOT NULL,
    agenda           jsonb NOT NULL,
    remedial_actions jsonb NOT NULL,
    organizer        jsonb NOT NULL,
    attendees        jsonb NOT NULL,
    sequence         int NOT NULL DEFAULT 0,
    status           text NOT NULL DEFAULT 'scheduled'
                     CHECK (status IN ('scheduled', 'held', 'cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

-- Who is busy when. The exclusion constraint makes a double booking of the provider,
-- the quality lead or the lay member impossible, whatever the number of replicas.
CREATE TABLE bookings (
    meeting_id uuid NOT NULL REFERENCES meetings ON DELETE CASCADE,
    attendee   text NOT NULL,
    during     tstzrange NOT NULL,
    PRIMARY KEY (meeting_id, attendee),
    EXCLUDE USING gist (attendee WITH =, during WITH &&)
);

-- Moderate concerns: items for the provider's next Clinical Quality Review Meeting.
CREATE TABLE cqrm_agenda (
    concern_id uuid PRIMARY KEY REFERENCES concerns,
    ods_code   text NOT NULL,
    item       text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now()
);

-- Low concerns: the watch list for the quarterly report.
CREATE TABLE watch_list (
    concern_id uuid PRIMARY KEY REFERENCES concerns,
    ods_code   text NOT NULL,
    item       text NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now()
);
