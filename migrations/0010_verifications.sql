-- Edge verification (issue 33): after a URL's purge (and its preload)
-- succeeded, the verify stage probes the CDN's edges and the origin and
-- compares what identifies the content. One row per URL probed: a file
-- item's own URL, or the files purgeq knows under a directory item (a
-- sample). `edges` is the last round, per edge: what it served, what the
-- origin served, since when it is fresh (JSON). Final states: `fresh`
-- (with `fresh_at`), `stale` (with the edge and the difference in
-- `reason`), `unverifiable` (why, in `reason`).
CREATE TABLE verifications (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'fresh', 'stale', 'unverifiable')),
    -- When the URL was asked for (time to fresh counts from here).
    enqueued_at TEXT NOT NULL,
    -- When its purge had succeeded (the deadline counts from here).
    started_at  TEXT NOT NULL,
    not_before  TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    repurges    INTEGER NOT NULL DEFAULT 0,
    edges       TEXT,
    reason      TEXT,
    fresh_at    TEXT,
    finished_at TEXT,
    UNIQUE (item_id, url)
);
CREATE INDEX verifications_due ON verifications (not_before) WHERE state = 'pending';
CREATE INDEX verifications_finished ON verifications (finished_at) WHERE finished_at IS NOT NULL;
-- "Stale now" asks whether a URL turned fresh since.
CREATE INDEX verifications_url ON verifications (url);
-- A succeeded item waits for the preload it asked for: found by item.
CREATE INDEX preloads_after_item ON preloads (after_item) WHERE after_item IS NOT NULL;
