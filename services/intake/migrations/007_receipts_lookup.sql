-- A batch's receipts and the registry's version, in one call planned for the batch's own
-- submission ids every time (issue 21). As a prepared statement, PostgreSQL kept one generic
-- plan for the look-up after its first five runs, costed while the receipts were a few pages:
-- it read every receipt on every batch until the table was next analysed (16 ms a batch at
-- 45,000 receipts, 60% of PostgreSQL's time in a benchmark's year). The function's own
-- setting makes each call plan its query afresh, for its arguments, whatever the version.
CREATE FUNCTION receipts_and_registry_version(ids uuid[])
RETURNS TABLE (registry_version bigint, submission_id uuid, feed_user text, outcome text,
               feedback_id uuid, ods_code text, provider_record_id text,
               received_at timestamptz, reasons jsonb)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    RETURN QUERY
    SELECT v.version, r.submission_id, r.feed_user, r.outcome, r.feedback_id, r.ods_code,
           r.provider_record_id, r.received_at, q.reasons
    FROM registry_version v
    LEFT JOIN (receipts r LEFT JOIN quarantine q USING (submission_id))
        ON r.submission_id = ANY(ids);
END $$;
