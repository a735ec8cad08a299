-- purgeq's store. Table and column names are a public contract: operators
-- query them with sqlite3 while the daemon runs (see the README).
-- Timestamps are UTC text, 'YYYY-MM-DDTHH:MM:SS.sssZ', so they sort and
-- compare as strings and read well in a terminal.

-- One row per accepted client call.
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,          -- UUIDv7: sorts by arrival time
    received_at TEXT NOT NULL,
    source      TEXT NOT NULL,             -- 'uds:uid=1000,pid=42' or 'tcp:127.0.0.1:5000'
    label       TEXT                       -- optional, given by the client
);

-- One row per purge API call (or attempt to make one).
CREATE TABLE batches (
    id             INTEGER PRIMARY KEY,
    endpoint_id    TEXT NOT NULL,
    -- sending: being sent (re-sent after a crash); submitted: accepted, being
    -- tracked; succeeded/failed: final per-URL results recorded; split: a URL
    -- in it was refused, its items moved to two smaller batches; released:
    -- not sent (credentials refused, endpoint inactive), items back to pending.
    state          TEXT NOT NULL
                   CHECK (state IN ('sending', 'submitted', 'succeeded', 'failed', 'split', 'released')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    not_before     TEXT NOT NULL,
    task_track_id  TEXT,
    correlation_id TEXT,
    files          INTEGER NOT NULL,
    directories    INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    sent_at        TEXT,
    accepted_at    TEXT,
    finished_at    TEXT,
    last_error     TEXT
);
CREATE INDEX batches_state ON batches (state, not_before);

-- One row per purge target generation: a URL that is sent, finished, then
-- asked for again gets a new row.
CREATE TABLE items (
    id          INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'directory')),
    url         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'sending', 'submitted', 'succeeded', 'failed', 'merged', 'cancelled')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  TEXT NOT NULL,
    batch_id    INTEGER REFERENCES batches (id) ON DELETE SET NULL,
    merged_into INTEGER REFERENCES items (id) ON DELETE SET NULL,
    last_error  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    finished_at TEXT
);
-- Deduplication: at most one pending item per (endpoint, url, kind). The
-- column order also serves range scans for directory absorption.
CREATE UNIQUE INDEX items_pending ON items (endpoint_id, url, kind) WHERE state = 'pending';
-- The batcher: oldest waiting items per endpoint and kind.
CREATE INDEX items_state ON items (state, endpoint_id, kind, not_before);
-- Is any directory pending on this endpoint? (Skips coverage checks when not.)
CREATE INDEX items_pending_directories ON items (endpoint_id) WHERE state = 'pending' AND kind = 'directory';
-- Age of the oldest waiting item, in O(log n).
CREATE INDEX items_pending_age ON items (created_at) WHERE state = 'pending';
CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX items_merged_into ON items (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX items_finished ON items (finished_at) WHERE finished_at IS NOT NULL;

-- Which request asked for which item.
CREATE TABLE request_items (
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    item_id    INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,           -- index of the URL in the request
    -- Set when the URL asked for is covered by a pending directory and the
    -- link points at that directory's item: what the client asked for.
    requested_url  TEXT,
    requested_kind TEXT CHECK (requested_kind IN ('file', 'directory')),
    PRIMARY KEY (request_id, item_id, position)
) WITHOUT ROWID;
CREATE INDEX request_items_item ON request_items (item_id);

-- URLs sent per subscription and quota day (in the configured UTC offset).
CREATE TABLE quota_days (
    subscription_id  TEXT NOT NULL,
    day              TEXT NOT NULL,        -- 'YYYY-MM-DD'
    files_used       INTEGER NOT NULL DEFAULT 0,
    directories_used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscription_id, day)
) WITHOUT ROWID;

-- One row per URL a request asked for, newest first, with where it went.
-- A URL coalesced into a pending directory shows the directory's fate
-- (effective_state) next to its own state ('merged') and the directory's
-- URL (merged_into_url).
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
    COALESCE(m.batch_id, i.batch_id)       AS batch_id,
    b.task_track_id                        AS task_track_id,
    b.correlation_id                       AS correlation_id,
    COALESCE(m.attempts, i.attempts)       AS attempts,
    COALESCE(m.last_error, i.last_error)   AS last_error,
    COALESCE(m.finished_at, i.finished_at) AS finished_at
FROM request_items ri
JOIN requests r ON r.id = ri.request_id
JOIN items i ON i.id = ri.item_id
LEFT JOIN items m ON m.id = i.merged_into
LEFT JOIN batches b ON b.id = COALESCE(m.batch_id, i.batch_id)
ORDER BY r.id DESC, ri.position;

-- What is waiting, and why.
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
        WHEN i.state = 'pending' AND i.attempts = 0 THEN 'waiting for a batch'
        WHEN i.state = 'pending' THEN 'waiting to retry'
        WHEN i.state = 'sending' THEN 'being sent'
        ELSE 'sent, waiting for the final result'
    END AS why
FROM items i
WHERE i.state IN ('pending', 'sending', 'submitted')
ORDER BY i.endpoint_id, i.not_before, i.id;
