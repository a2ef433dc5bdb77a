-- Transactional outbox: events written in the same transaction as the state change that
-- causes them; the relay publishes them (with confirms) and deletes them.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    exchange    text NOT NULL,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Idempotent consumption: an event id is handled at most once per service.
CREATE TABLE inbox (
    event_id    uuid PRIMARY KEY,
    event_type  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Why a delivery failed: the dead-letter tools show it beside the dead-lettered message.
CREATE TABLE delivery_failures (
    id          bigserial PRIMARY KEY,
    message_id  text,
    queue       text NOT NULL,
    attempt     int NOT NULL,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_failures_message ON delivery_failures (message_id);
