-- Further copies of provider records already stored, counted in one call planned afresh for
-- its arguments every time (issue 21), like the receipts look-up (007). As a prepared
-- statement the count's UPDATE kept a generic plan costed while the feedback was a few pages:
-- a scan of every piece of feedback for each record counted, until the table was next
-- analysed. The records come sorted and are updated one by one in that order, so that two
-- batches counting the same records never deadlock.
CREATE FUNCTION count_duplicates(ods_codes text[], record_ids text[], copies int[])
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(ods_codes, 1), 0) LOOP
        UPDATE feedback SET duplicates = duplicates + copies[i]
        WHERE ods_code = ods_codes[i] AND provider_record_id = record_ids[i];
    END LOOP;
END $$;
