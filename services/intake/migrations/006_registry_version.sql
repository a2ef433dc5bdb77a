-- intake keeps the provider registry and the feeds' grants in memory (issue 21: they were
-- read twice per batch). Every change to them bumps this version in the same transaction;
-- each batch reads the version with its receipts and reloads the registry when it moved, so
-- a revoked feed or a new provider counts from the next batch on, on every replica.
CREATE TABLE registry_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO registry_version VALUES (true, 0);

CREATE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE registry_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER providers_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON providers FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER feeds_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON feeds FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
CREATE TRIGGER feed_providers_registry_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON feed_providers FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version();
