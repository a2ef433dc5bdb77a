-- Attendees' replies to meeting invitations (iTIP REPLY), received by the inbound SMTP
-- endpoint; one row per message (a message delivered twice is recorded once).
CREATE TABLE replies (
    message_key text PRIMARY KEY,
    meeting_id  uuid NOT NULL,
    attendee    text NOT NULL,
    partstat    text NOT NULL CHECK (partstat IN ('accepted', 'declined', 'tentative')),
    sequence    int NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX replies_meeting ON replies (meeting_id, received_at);

-- Who was invited to a meeting: the attendees of the invitations sent for it.
CREATE INDEX notifications_meeting ON notifications ((payload->>'meeting_id'))
    WHERE event_type LIKE 'meeting.%';
