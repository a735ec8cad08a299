-- The status page's "Quota used today" chart is drawn from the quota
-- ledger itself (issue 36): it summed the purge batches the CDN accepted,
-- while the quota bars beside it read `quota_days`, which also charges
-- calls whose answer was lost, re-sent batches and preloads. The page
-- showed 245 used in the chart and 942 on the bar.
--
-- Every change of a `quota_days` row is written, as it happens, to
-- `chart_minutes` under the chart `quota <subscription> <day>`, series
-- `files`, `directories` and `preloads`, `n` the change (negative for a
-- refund). The chart of a day sums to that day's row, whatever the
-- clock: the page places each minute in the day's hours.

-- What the ledger holds now (a row per day, as long as retention keeps
-- them), at the minute of the upgrade.
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'quota ' || subscription_id || ' ' || day, strftime('%Y-%m-%dT%H:%M', 'now'), series, n
FROM (
    SELECT subscription_id, day, 'files' AS series, files_used AS n FROM quota_days
    UNION ALL
    SELECT subscription_id, day, 'directories', directories_used FROM quota_days
    UNION ALL
    SELECT subscription_id, day, 'preloads', preloads_used FROM quota_days
)
WHERE n <> 0;

CREATE TRIGGER chart_quota_insert AFTER INSERT ON quota_days
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    SELECT 'quota ' || NEW.subscription_id || ' ' || NEW.day, strftime('%Y-%m-%dT%H:%M', 'now'), series, n
    FROM (
        SELECT 'files' AS series, NEW.files_used AS n
        UNION ALL SELECT 'directories', NEW.directories_used
        UNION ALL SELECT 'preloads', NEW.preloads_used
    )
    WHERE n <> 0
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER chart_quota_update AFTER UPDATE ON quota_days
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    SELECT 'quota ' || NEW.subscription_id || ' ' || NEW.day, strftime('%Y-%m-%dT%H:%M', 'now'), series, n
    FROM (
        SELECT 'files' AS series, NEW.files_used - OLD.files_used AS n
        UNION ALL SELECT 'directories', NEW.directories_used - OLD.directories_used
        UNION ALL SELECT 'preloads', NEW.preloads_used - OLD.preloads_used
    )
    WHERE n <> 0
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + excluded.n;
END;
