-- Caches in front of the origin (issue 34): one row per URL and layer
-- (`[[origin_cache]]`). A URL's CDN purge waits until every layer that
-- holds its host has purged it: while a row is pending, its item's
-- `not_before` is '9999-12-31T23:59:59.999Z' (held; the batcher never
-- takes it), and the origin stage sets it to the time of release. The
-- `queue` view says which layers an item waits for, and why.
CREATE TABLE origin_purges (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    -- The `[[origin_cache]]` entry's name.
    layer       TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'done', 'skipped')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- When the layer is asked (again).
    not_before  TEXT NOT NULL,
    -- The last failure, while pending; why, when skipped.
    last_error  TEXT,
    -- What the layer answered when done: `purged`, `not cached`.
    answer      TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    done_at     TEXT,
    UNIQUE (item_id, layer)
);
CREATE INDEX origin_purges_due ON origin_purges (not_before) WHERE state = 'pending';

DROP VIEW IF EXISTS queue;
CREATE VIEW queue AS
SELECT
    i.id          AS item_id,
    i.endpoint_id AS endpoint_id,
    i.kind        AS kind,
    i.url         AS url,
    i.state       AS state,
    i.attempts    AS attempts,
    i.not_before  AS not_before,
    i.created_at  AS created_at,
    i.last_error  AS last_error,
    CASE
        WHEN i.state = 'pending' AND i.not_before = '9999-12-31T23:59:59.999Z'
            THEN 'waiting for origin caches: ' || coalesce((
                SELECT group_concat(o.layer || coalesce(' (' || o.last_error || ')', ''), ', ')
                FROM origin_purges o WHERE o.item_id = i.id AND o.state = 'pending'), 'none pending')
        WHEN i.state = 'pending' AND s.reason IS NOT NULL
            THEN s.reason || coalesce(' (until ' || s.until || ')', '')
        WHEN i.state = 'pending' AND i.not_before > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            THEN 'waiting to retry at ' || i.not_before
        WHEN i.state = 'pending' AND q.reason IS NOT NULL
            THEN q.reason || coalesce(' (until ' || q.until || ')', '')
        WHEN i.state = 'pending' AND i.attempts = 0 THEN 'waiting for a batch'
        WHEN i.state = 'pending' THEN 'waiting to retry'
        WHEN i.state = 'sending' THEN 'being sent'
        ELSE 'sent, waiting for the final result'
    END AS why,
    'purge'       AS operation
FROM items i
LEFT JOIN waits s ON s.scope = 'sender'
LEFT JOIN waits q ON q.scope = 'quota:' || i.kind
WHERE i.state IN ('pending', 'sending', 'submitted')
UNION ALL
SELECT
    p.id, p.endpoint_id, 'file', p.url, p.state, p.attempts, p.not_before, p.created_at, p.last_error,
    CASE
        WHEN p.state = 'pending' AND s.reason IS NOT NULL
            THEN s.reason || coalesce(' (until ' || s.until || ')', '')
        WHEN p.state = 'pending' AND p.not_before > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            THEN 'waiting to retry at ' || p.not_before
        WHEN p.state = 'pending' AND q.reason IS NOT NULL
            THEN q.reason || coalesce(' (until ' || q.until || ')', '')
        WHEN p.state = 'pending' AND p.attempts = 0 THEN 'waiting for a batch'
        WHEN p.state = 'pending' THEN 'waiting to retry'
        WHEN p.state = 'sending' THEN 'being sent'
        ELSE 'sent, waiting for the final result'
    END,
    'preload'
FROM preloads p
LEFT JOIN waits s ON s.scope = 'sender'
LEFT JOIN waits q ON q.scope = 'quota:preload'
WHERE p.state IN ('pending', 'sending', 'submitted')
ORDER BY endpoint_id, not_before, item_id;
