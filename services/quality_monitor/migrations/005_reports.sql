-- Reports (issue 19): each rendering of a report is a version of its own, never overwritten.
-- A re-run after late data is the next version; the rows are append-only.
CREATE TABLE reports (
    report_id    uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('cqrm_pack', 'quality_performance',
                                               'you_said_we_did')),
    scope        text NOT NULL,            -- the provider's ODS code, or 'all'
    period       text NOT NULL,            -- YYYY-MM or YYYY-Qn
    version      integer NOT NULL CHECK (version >= 1),
    title        text NOT NULL,
    digest       text NOT NULL,            -- SHA-256 of what the report says
    generated_at timestamptz NOT NULL,
    generated_by text NOT NULL,            -- the authenticated actor, or quality-monitor's schedule
    reason       text NOT NULL,
    document     jsonb NOT NULL,           -- the report as data (sections, tables)
    pdf          bytea NOT NULL,
    html         text NOT NULL,
    csv_zip      bytea NOT NULL,
    xlsx         bytea NOT NULL,
    UNIQUE (kind, scope, period, version)
);
CREATE INDEX reports_latest ON reports (kind, period, scope, version DESC);

CREATE FUNCTION reports_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'monitor.reports keeps every version (% refused)', TG_OP;
END
$$;
CREATE TRIGGER reports_no_update BEFORE UPDATE OR DELETE ON reports
    FOR EACH ROW EXECUTE FUNCTION reports_are_append_only();
CREATE TRIGGER reports_no_truncate BEFORE TRUNCATE ON reports
    FOR EACH STATEMENT EXECUTE FUNCTION reports_are_append_only();
