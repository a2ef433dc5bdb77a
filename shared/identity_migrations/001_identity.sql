-- The platform's identities: people and service accounts, their roles, their API tokens.
--
-- A schema of the platform, not of a service: written only by the administrator role (the
-- `carewatch users` / `carewatch tokens` commands, later the workspace service), read by
-- every service to authenticate a request. No service writes it, so "no service reads
-- another's tables" still holds: no service owns it.
CREATE TABLE accounts (
    account_id   uuid PRIMARY KEY,
    -- The name the audit trails record (an e-mail for a person, e.g. a.lead@icb.nhs.uk).
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._@+-]{1,200}$'),
    display_name text NOT NULL DEFAULT '',
    -- person: a member of staff or of a provider; service: a script or another service
    -- (which may act on behalf of a person, see shared/identity.py).
    kind         text NOT NULL CHECK (kind IN ('person', 'service')),
    roles        text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
                     'quality_team', 'quality_lead', 'lay_member', 'provider_user',
                     'operator']::text[]),
    -- A provider user's scope: the providers (ODS codes) it may see and act for.
    ods_codes    text[] NOT NULL DEFAULT '{}',
    -- Sign-in with an OpenID Connect provider (Entra ID, NHSmail): the issuer and subject
    -- of the person's ID token, set when the workspace links the account.
    oidc_issuer  text,
    oidc_subject text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    disabled_at  timestamptz,
    UNIQUE (oidc_issuer, oidc_subject),
    CHECK (NOT ('provider_user' = ANY (roles)) OR
           (cardinality(roles) = 1 AND cardinality(ods_codes) > 0))
);

-- API tokens: only a SHA-256 of the secret is kept (a token is 256 random bits: a slow
-- hash adds nothing); scoped to some of the account's roles; expiring; revocable.
CREATE TABLE tokens (
    token_id      text PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts,
    secret_sha256 bytea NOT NULL,
    scopes        text[] NOT NULL,
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX tokens_account ON tokens (account_id);
