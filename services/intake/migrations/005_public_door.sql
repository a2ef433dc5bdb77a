-- The public's door (issue 19): a feed registered with `carewatch feeds create NAME --public`
-- (the workspace's public feedback page) may submit the public's kinds (public_feedback) for
-- any registered provider, and nothing else; no other feed may submit those kinds.
ALTER TABLE feeds ADD COLUMN public_door boolean NOT NULL DEFAULT false;

-- A member of the public's contact details, given on purpose so that the commissioner can
-- reply: personal data, withheld from the accepted content and from every event. Kept here
-- alone, keyed by the feedback, and deleted after CAREWATCH_PUBLIC_CONTACT_RETENTION_DAYS.
-- Only the quality team and its lead read it (intake's GET /v1/public-feedback/{reference},
-- each read in contact_reads).
CREATE TABLE public_contacts (
    feedback_id  uuid PRIMARY KEY REFERENCES feedback ON DELETE CASCADE,
    ods_code     text NOT NULL,
    reference    text NOT NULL,
    contact_by   text NOT NULL,
    contact      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ods_code, reference)
);
CREATE INDEX public_contacts_reference ON public_contacts (reference);
CREATE INDEX public_contacts_received ON public_contacts (received_at);

-- Who read which person's contact details, when (the audit of personal data).
CREATE TABLE contact_reads (
    read_id     bigserial PRIMARY KEY,
    feedback_id uuid NOT NULL,
    reference   text NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
