-- Local accounts for a fresh install (before an ICB's OpenID Connect tenant is set up): an
-- argon2id hash of the person's password, set with `carewatch users set-password`. NULL: the
-- account cannot sign in with a password (OIDC only, or a service account).
ALTER TABLE accounts ADD COLUMN password_hash text;
