-- Cache rules and the `expired` state (issue 32), as
-- migrations/0007_cache_rules.sql and 0008_expired_state.sql on SQLite
-- (PostgreSQL changes a CHECK in place).
CREATE TABLE cache_policies (
    endpoint_id TEXT PRIMARY KEY,
    policy      TEXT NOT NULL,
    fetched_at  TEXT NOT NULL
);

ALTER TABLE request_items ADD COLUMN link_reason TEXT
    CHECK (link_reason IN ('covered', 'query_ignored'));

ALTER TABLE items DROP CONSTRAINT items_state_check;
ALTER TABLE items ADD CONSTRAINT items_state_check
    CHECK (state IN ('pending', 'sending', 'submitted', 'succeeded', 'failed', 'merged', 'cancelled', 'expired'));
ALTER TABLE items ADD COLUMN expires_at TEXT;
ALTER TABLE items ADD COLUMN expiry_rule TEXT;
CREATE INDEX items_pending_expiry ON items (expires_at)
    WHERE state = 'pending' AND expires_at IS NOT NULL;

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
    'purge'::text                          AS operation,
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
