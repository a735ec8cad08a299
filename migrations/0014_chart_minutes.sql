-- The status page's charts read per-minute totals kept as rows are
-- written, not the rows themselves (issue 31). "URLs enqueued" counted
-- every URL of the requests in the last hour and day: after a release of
-- a million URLs that is a million rows per look (0.9 s for the hour
-- alone), and the calls chart walked a day of calls (86,400 at one a
-- second: 45 ms). Now each chart reads at most a day of minutes.
--
-- `chart` is `urls` (series `enqueued`, `purged`) or `calls` (series: the
-- outcome). The triggers below keep it in the same transaction as the
-- rows; retention removes minutes as old as the rest of the history.
CREATE TABLE chart_minutes (
    chart  TEXT NOT NULL,
    minute TEXT NOT NULL,
    series TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (chart, minute, series)
);

-- The last two days as they were, so the charts do not start empty.
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'urls', substr(r.received_at, 1, 16), 'enqueued', count(*)
FROM requests r JOIN request_items ri ON ri.request_id = r.id
WHERE r.received_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')
GROUP BY substr(r.received_at, 1, 16);
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'urls', substr(finished_at, 1, 16), 'purged', count(*)
FROM items
WHERE finished_at IS NOT NULL AND finished_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')
  AND state = 'succeeded'
GROUP BY substr(finished_at, 1, 16);
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'calls', substr(at, 1, 16), outcome, count(*)
FROM calls WHERE at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')
GROUP BY substr(at, 1, 16), outcome;

-- A URL asked for: its request's arrival minute.
CREATE TRIGGER chart_enqueued AFTER INSERT ON request_items
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    SELECT 'urls', substr(received_at, 1, 16), 'enqueued', 1 FROM requests WHERE id = NEW.request_id
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + 1;
END;

-- A purge that succeeded: the minute it finished.
CREATE TRIGGER chart_purged AFTER UPDATE OF state ON items
WHEN NEW.state = 'succeeded' AND OLD.state IS NOT 'succeeded' AND NEW.finished_at IS NOT NULL
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    VALUES ('urls', substr(NEW.finished_at, 1, 16), 'purged', 1)
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER chart_purged_insert AFTER INSERT ON items
WHEN NEW.state = 'succeeded' AND NEW.finished_at IS NOT NULL
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    VALUES ('urls', substr(NEW.finished_at, 1, 16), 'purged', 1)
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + 1;
END;

-- An API call, by outcome.
CREATE TRIGGER chart_calls AFTER INSERT ON calls
BEGIN
    INSERT INTO chart_minutes (chart, minute, series, n)
    VALUES ('calls', substr(NEW.at, 1, 16), NEW.outcome, 1)
    ON CONFLICT (chart, minute, series) DO UPDATE SET n = n + 1;
END;
