-- The provider registry: who the commissioner monitors.
CREATE TABLE providers (
    ods_code              text PRIMARY KEY,
    name                  text NOT NULL,
    provider_type         text NOT NULL,
    quality_contact_email text NOT NULL,
    region                text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Provider feeds: a RabbitMQ user (AMQP) and the ODS codes it may submit for.
CREATE TABLE feeds (
    feed_user   text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE TABLE feed_providers (
    feed_user text NOT NULL REFERENCES feeds ON DELETE CASCADE,
    ods_code  text NOT NULL REFERENCES providers,
    PRIMARY KEY (feed_user, ods_code)
);

-- Accepted feedback (free text already redacted). One row per provider record.
CREATE TABLE feedback (
    feedback_id        uuid PRIMARY KEY,
    submission_id      uuid NOT NULL UNIQUE,
    ods_code           text NOT NULL REFERENCES providers,
    provider_record_id text NOT NULL,
    kind               text NOT NULL,
    version            int NOT NULL,
    occurred_on        date NOT NULL,
    theme              text,
    content            jsonb NOT NULL,
    redactions         jsonb NOT NULL DEFAULT '{}',
    feed_user          text,
    received_at        timestamptz NOT NULL DEFAULT now(),
    duplicates         int NOT NULL DEFAULT 0,
    UNIQUE (ods_code, provider_record_id)
);

-- Everything that failed validation or authorisation, kept with its reasons.
CREATE TABLE quarantine (
    submission_id uuid PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    feed_user     text,
    routing_key   text,
    message_id    text,
    content_type  text,
    body          bytea NOT NULL,
    reasons       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resubmitted', 'discarded'))
);
CREATE INDEX quarantine_open ON quarantine (received_at) WHERE status = 'open';
