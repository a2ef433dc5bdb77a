-- Attendees' replies to meeting invitations (notification's meeting.reply.v1): the latest
-- reply of each attendee to each meeting. A reply may arrive before its meeting.scheduled
-- (no foreign key); a late, older one (lower sequence, or received earlier) changes nothing.
CREATE TABLE meeting_replies (
    meeting_id  uuid NOT NULL,
    attendee    text NOT NULL,  -- the attendee's address, lower case
    partstat    text NOT NULL CHECK (partstat IN ('accepted', 'declined', 'tentative')),
    sequence    int NOT NULL,   -- the invitation's SEQUENCE the reply answers
    received_at timestamptz NOT NULL,
    PRIMARY KEY (meeting_id, attendee)
);
