-- no-transaction
-- A new final state, `expired` (issue 32): a URL whose every cached copy
-- has outlived the endpoint's TTL while its intent waited (behind the
-- quota, a pause, an outage) needs no purge, and costs no quota. SQLite
-- cannot change a CHECK in place, so `items` is rebuilt the documented way
-- (https://sqlite.org/lang_altertable.html#otheralter): foreign keys off
-- (a DROP of `items` would otherwise cascade to `request_items`), one
-- transaction for the rebuild, then a check. The views that read `items`
-- are dropped and made again; `history` also learns `link_reason`.
-- Written so that running it twice (a crash between its COMMIT and the
-- migrator's own bookkeeping) rebuilds again and loses nothing.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
DROP VIEW IF EXISTS history;
DROP VIEW IF EXISTS queue;
DROP TABLE IF EXISTS items_rebuilt;
CREATE TABLE items_rebuilt (
    id          INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'directory')),
    url         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'submitted', 'succeeded', 'failed', 'merged', 'cancelled', 'expired')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  TEXT NOT NULL,
    batch_id    INTEGER REFERENCES batches (id) ON DELETE SET NULL,
    merged_into INTEGER REFERENCES items (id) ON DELETE SET NULL,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT,
    urgent      INTEGER NOT NULL DEFAULT 0,
    merge_reason TEXT CHECK (merge_reason IN ('coalesced', 'covered', 'promoted')),
    promoted    INTEGER NOT NULL DEFAULT 0,
    -- When every copy cached before the item's newest intent has expired
    -- at the edge (the intent's time plus the longest TTL of the rules
    -- that match, where the endpoint ignores Cache-Control); NULL: never
    -- assumed, the URL is purged.
    expires_at  TEXT,
    -- The rule behind `expires_at`, for the history: `Suffix .html, TTL 300 s`.
    expiry_rule TEXT
);
INSERT INTO items_rebuilt (id, endpoint_id, kind, url, state, attempts, not_before, batch_id, merged_into, last_error, created_at, updated_at, finished_at, urgent, merge_reason, promoted)
SELECT id, endpoint_id, kind, url, state, attempts, not_before, batch_id, merged_into, last_error, created_at, updated_at, finished_at, urgent, merge_reason, promoted FROM items;
DROP TABLE items;
ALTER TABLE items_rebuilt RENAME TO items;
CREATE UNIQUE INDEX items_pending ON items (endpoint_id, url, kind) WHERE state = 'pending';
CREATE INDEX items_state ON items (state, endpoint_id, kind, not_before);
CREATE INDEX items_pending_directories ON items (endpoint_id) WHERE state = 'pending' AND kind = 'directory';
CREATE INDEX items_pending_age ON items (created_at) WHERE state = 'pending';
CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX items_merged_into ON items (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX items_finished ON items (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX items_pending_urgent ON items (endpoint_id, kind, not_before)
    WHERE state = 'pending' AND urgent = 1;

CREATE INDEX items_pending_expiry ON items (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;
CREATE VIEW history AS
SELECT
    r.id                                   AS request_id,
    r.received_at                          AS received_at,
    r.source                               AS source,
    i.id                                   AS item_id,
    i.endpoint_id                          AS endpoint_id,
    COALESCE(ri.requested_kind, i.kind)    AS kind,
    COALESCE(ri.requested_url, i.url)      AS url,
    CASE WHEN ri.requested_url IS NULL THEN i.state ELSE 'merged' END AS state,
    COALESCE(m.state, i.state)             AS effective_state,
    CASE WHEN ri.requested_url IS NULL THEN m.url ELSE i.url END AS merged_into_url,
    CASE
        WHEN ri.requested_url IS NOT NULL THEN COALESCE(ri.link_reason, 'covered')
        WHEN i.merged_into IS NOT NULL THEN i.merge_reason
    END                                    AS merge_reason,
    COALESCE(m.batch_id, i.batch_id)       AS batch_id,
    b.task_track_id                        AS task_track_id,
    b.correlation_id                       AS correlation_id,
    COALESCE(m.attempts, i.attempts)       AS attempts,
    COALESCE(m.last_error, i.last_error)   AS last_error,
    COALESCE(m.finished_at, i.finished_at) AS finished_at,
    r.priority                             AS priority,
    ri.position                            AS position,
    'purge'                                AS operation,
    CASE
        WHEN ri.preload = 0 THEN NULL
        WHEN p.id IS NOT NULL THEN p.state
        WHEN r.cancelled_at IS NOT NULL THEN 'cancelled'
        WHEN COALESCE(m.state, i.state) IN ('failed', 'cancelled') THEN 'skipped'
        ELSE 'waiting'
    END                                    AS preload_state,
    pb.task_track_id                       AS preload_task_track_id,
    p.attempts                             AS preload_attempts,
    p.last_error                           AS preload_error,
    p.finished_at                          AS preload_finished_at
FROM request_items ri
JOIN requests r ON r.id = ri.request_id
JOIN items i ON i.id = ri.item_id
LEFT JOIN items m ON m.id = i.merged_into
LEFT JOIN batches b ON b.id = COALESCE(m.batch_id, i.batch_id)
LEFT JOIN request_preloads rp ON rp.request_id = ri.request_id AND rp.position = ri.position
LEFT JOIN preloads p ON p.id = rp.preload_id
LEFT JOIN batches pb ON pb.id = p.batch_id
UNION ALL
SELECT
    r.id, r.received_at, r.source, NULL, p.endpoint_id, 'file', p.url,
    p.state, p.state, NULL, NULL, p.batch_id, pb.task_track_id, pb.correlation_id,
    p.attempts, p.last_error, p.finished_at, r.priority, rp.position,
    'preload', p.state, pb.task_track_id, p.attempts, p.last_error, p.finished_at
FROM request_preloads rp
JOIN requests r ON r.id = rp.request_id
JOIN preloads p ON p.id = rp.preload_id
LEFT JOIN batches pb ON pb.id = p.batch_id
WHERE NOT EXISTS (SELECT 1 FROM request_items ri
                  WHERE ri.request_id = rp.request_id AND ri.position = rp.position)
ORDER BY request_id DESC, position;
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

COMMIT;
PRAGMA foreign_keys = ON;
