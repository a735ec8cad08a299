-- As migrations/0014_chart_minutes.sql on SQLite: the charts read
-- per-minute totals kept as rows are written (issue 31). As for the
-- counts (0008), statements append their totals to
-- `chart_minute_deltas` (every node's intake writes the same minute's
-- row), and `Store::fold_counts` moves them into `chart_minutes`.
CREATE TABLE chart_minutes (
    chart  TEXT NOT NULL,
    minute TEXT NOT NULL,
    series TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (chart, minute, series)
);
CREATE TABLE chart_minute_deltas (
    chart  TEXT NOT NULL,
    minute TEXT NOT NULL,
    series TEXT NOT NULL,
    n      BIGINT NOT NULL
);

LOCK TABLE request_items, items, calls IN SHARE MODE;
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'urls', substr(r.received_at, 1, 16), 'enqueued', count(*)
FROM requests r JOIN request_items ri ON ri.request_id = r.id
WHERE r.received_at >= to_char(now() AT TIME ZONE 'UTC' - interval '2 days',
                               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
GROUP BY substr(r.received_at, 1, 16);
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'urls', substr(finished_at, 1, 16), 'purged', count(*)
FROM items
WHERE finished_at IS NOT NULL
  AND finished_at >= to_char(now() AT TIME ZONE 'UTC' - interval '2 days',
                             'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
  AND state = 'succeeded'
GROUP BY substr(finished_at, 1, 16);
INSERT INTO chart_minutes (chart, minute, series, n)
SELECT 'calls', substr(at, 1, 16), outcome, count(*)
FROM calls
WHERE at >= to_char(now() AT TIME ZONE 'UTC' - interval '2 days', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
GROUP BY substr(at, 1, 16), outcome;

CREATE FUNCTION chart_enqueued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chart_minute_deltas (chart, minute, series, n)
    SELECT 'urls', substr(r.received_at, 1, 16), 'enqueued', count(*)
    FROM new_rows ri JOIN requests r ON r.id = ri.request_id
    GROUP BY substr(r.received_at, 1, 16);
    RETURN NULL;
END
$$;
CREATE TRIGGER chart_enqueued AFTER INSERT ON request_items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chart_enqueued();

CREATE FUNCTION chart_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO chart_minute_deltas (chart, minute, series, n)
        SELECT 'urls', substr(finished_at, 1, 16), 'purged', count(*) FROM new_rows
        WHERE state = 'succeeded' AND finished_at IS NOT NULL
        GROUP BY substr(finished_at, 1, 16);
    ELSIF EXISTS (SELECT 1 FROM new_rows WHERE state = 'succeeded') THEN
        INSERT INTO chart_minute_deltas (chart, minute, series, n)
        SELECT 'urls', substr(n.finished_at, 1, 16), 'purged', count(*)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.state = 'succeeded' AND o.state <> 'succeeded' AND n.finished_at IS NOT NULL
        GROUP BY substr(n.finished_at, 1, 16);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER chart_purged AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chart_purged();
CREATE TRIGGER chart_purged_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chart_purged();

CREATE FUNCTION chart_calls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chart_minute_deltas (chart, minute, series, n)
    SELECT 'calls', substr(at, 1, 16), outcome, count(*) FROM new_rows
    GROUP BY substr(at, 1, 16), outcome;
    RETURN NULL;
END
$$;
CREATE TRIGGER chart_calls AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION chart_calls();
