-- The "Quota used today" chart from the quota ledger itself (issue 36;
-- SQLite's migration 0015 says why). A row trigger: the ledger's row is
-- locked by the change already, so one more row in the deltas costs no
-- contention between nodes; the fold each second moves it to
-- `chart_minutes`.

INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'quota ' || subscription_id || ' ' || day,
       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'), series, n
FROM (
    SELECT subscription_id, day, 'files' AS series, files_used AS n FROM quota_days
    UNION ALL
    SELECT subscription_id, day, 'directories', directories_used FROM quota_days
    UNION ALL
    SELECT subscription_id, day, 'preloads', preloads_used FROM quota_days
) AS ledger
WHERE n <> 0;

CREATE FUNCTION chart_quota() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at_minute TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI');
    d_files BIGINT := NEW.files_used;
    d_directories BIGINT := NEW.directories_used;
    d_preloads BIGINT := NEW.preloads_used;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        d_files := d_files - OLD.files_used;
        d_directories := d_directories - OLD.directories_used;
        d_preloads := d_preloads - OLD.preloads_used;
    END IF;
    INSERT INTO chart_minute_deltas (chart, minute, series, n)
    SELECT 'quota ' || NEW.subscription_id || ' ' || NEW.day, at_minute, s, v
    FROM (VALUES ('files', d_files), ('directories', d_directories), ('preloads', d_preloads)) AS t (s, v)
    WHERE v <> 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER chart_quota AFTER INSERT OR UPDATE ON quota_days
    FOR EACH ROW EXECUTE FUNCTION chart_quota();
