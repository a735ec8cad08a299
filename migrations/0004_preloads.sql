-- Preloads (issue 16): warming the edge once a purge has succeeded.
-- Released databases upgrade in place: this adds tables and columns with
-- defaults that keep every existing row's meaning, and recreates the two
-- views with the same columns first and new ones after.

-- One row per preload generation: a file URL the CDN is asked to fetch
-- from the origin into the edge. A table of its own, not rows of `items`:
-- nothing that coalesces, promotes or cuts purges can ever pick a preload
-- up and purge it. A preload that follows a purge is created in the
-- transaction that records the purge's `Succeed`, so no crash falls
-- between the two, and no preload exists before its purge has succeeded.
CREATE TABLE preloads (
    id          INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    url         TEXT NOT NULL,
    -- merged: a twin pending already carries it (the requests that wanted
    -- it were moved to that one); final for this row.
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'submitted', 'succeeded', 'failed', 'merged', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  TEXT NOT NULL,
    batch_id    INTEGER REFERENCES batches (id) ON DELETE SET NULL,
    -- The purge item whose success started it; NULL for a preload asked
    -- for on its own (POST /v1/preloads).
    after_item  INTEGER REFERENCES items (id) ON DELETE SET NULL,
    merged_into INTEGER REFERENCES preloads (id) ON DELETE SET NULL,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
);
-- At most one pending preload per URL: two requests warming one file
-- share the call.
CREATE UNIQUE INDEX preloads_pending ON preloads (endpoint_id, url) WHERE state = 'pending';
CREATE INDEX preloads_state ON preloads (state, endpoint_id, not_before);
CREATE INDEX preloads_batch ON preloads (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX preloads_finished ON preloads (finished_at) WHERE finished_at IS NOT NULL;

-- 1 when the request wants this URL preloaded once its purge succeeded
-- ("preload": true, or the endpoint's preload_after_purge).
ALTER TABLE request_items ADD COLUMN preload INTEGER NOT NULL DEFAULT 0;

-- Which request's URL (its position in the request) is carried by which
-- preload.
CREATE TABLE request_preloads (
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    preload_id INTEGER NOT NULL REFERENCES preloads (id) ON DELETE CASCADE,
    PRIMARY KEY (request_id, position)
) WITHOUT ROWID;
CREATE INDEX request_preloads_preload ON request_preloads (preload_id);

-- What a batch's call does: 'purge' (POST …/purges, its URLs in `items`)
-- or 'preload' (POST …/preloads, its URLs in `preloads`, counted in
-- `files`).
ALTER TABLE batches ADD COLUMN operation TEXT NOT NULL DEFAULT 'purge'
    CHECK (operation IN ('purge', 'preload'));

-- Preload URLs sent per quota day: a budget of their own
-- (quota.preloads_per_day).
ALTER TABLE quota_days ADD COLUMN preloads_used INTEGER NOT NULL DEFAULT 0;

-- The history, as before, plus each URL's preload. preload_state is NULL
-- when no preload was asked for; 'waiting' while its purge has not
-- succeeded; 'skipped' when the purge ended without success (nothing to
-- warm); else the preload's own state. Requests that asked only for
-- preloads have rows with operation = 'preload' and no item.
DROP VIEW history;
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
        WHEN ri.requested_url IS NOT NULL THEN 'covered'
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

-- What is waiting, and why: purges as before, then preloads (operation
-- says which; a preload's kind is always 'file').
DROP VIEW queue;
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
