-- The quota planner (issue 15): urgent intents, and directories chosen by
-- the planner to cover files the day's file quota cannot.

-- What the client asked for: 'urgent' intents go first and may use the
-- part of the day held back by quota.urgent_reserve_*.
ALTER TABLE requests ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('normal', 'urgent'));

-- 1 when any request that wants this item is urgent. The batcher cuts
-- urgent items first.
ALTER TABLE items ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0;

-- Why an item was merged into another (merged_into): 'coalesced' (a newer
-- twin of the same URL), 'covered' (a directory a client asked for) or
-- 'promoted' (a directory the planner chose because the day's file quota
-- could not cover the files under it). NULL for items merged before this
-- migration, whose reason was not recorded.
ALTER TABLE items ADD COLUMN merge_reason TEXT
    CHECK (merge_reason IN ('coalesced', 'covered', 'promoted'));

-- 1 for a directory the planner created (no client asked for it).
ALTER TABLE items ADD COLUMN promoted INTEGER NOT NULL DEFAULT 0;

-- The batcher's urgent lane: urgent items waiting per endpoint and kind.
CREATE INDEX items_pending_urgent ON items (endpoint_id, kind, not_before)
    WHERE state = 'pending' AND urgent = 1;

-- The history, as before, with why a URL was merged and how urgent its
-- request was.
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
    r.priority                             AS priority
FROM request_items ri
JOIN requests r ON r.id = ri.request_id
JOIN items i ON i.id = ri.item_id
LEFT JOIN items m ON m.id = i.merged_into
LEFT JOIN batches b ON b.id = COALESCE(m.batch_id, i.batch_id)
ORDER BY r.id DESC, ri.position;
