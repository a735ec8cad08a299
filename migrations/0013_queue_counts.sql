-- Counts kept as items and preloads change, not counted on each look
-- (issue 31). The batcher's planning, `/v1/stats`, `/metrics` and the
-- status page counted the queue by walking its index: with a million
-- pending behind a spent day that is a walk of a million entries per
-- look, and `/v1/stats` walked the whole history. Now each reads a
-- handful of rows here, whatever the queue and the history hold.
--
-- One row per endpoint, kind, state and lane (`urgent`), kept by the
-- triggers below in the same transaction as the change, so a crash
-- cannot part the counts from the rows. A row whose count falls to 0
-- stays (there are at most endpoints x 2 kinds x 8 states x 2 lanes).
-- A migration that rebuilds `items` or `preloads` must create these
-- triggers again (SQLite drops a table's triggers with it).
CREATE TABLE item_counts (
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    urgent      INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, kind, state, urgent)
);
INSERT INTO item_counts (endpoint_id, kind, state, urgent, n)
SELECT endpoint_id, kind, state, urgent, count(*) FROM items
GROUP BY endpoint_id, kind, state, urgent;

CREATE TRIGGER item_counts_insert AFTER INSERT ON items
BEGIN
    INSERT INTO item_counts (endpoint_id, kind, state, urgent, n)
    VALUES (NEW.endpoint_id, NEW.kind, NEW.state, NEW.urgent, 1)
    ON CONFLICT (endpoint_id, kind, state, urgent) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER item_counts_delete AFTER DELETE ON items
BEGIN
    UPDATE item_counts SET n = n - 1
    WHERE endpoint_id = OLD.endpoint_id AND kind = OLD.kind
      AND state = OLD.state AND urgent = OLD.urgent;
END;

CREATE TRIGGER item_counts_update AFTER UPDATE OF endpoint_id, kind, state, urgent ON items
WHEN OLD.endpoint_id IS NOT NEW.endpoint_id OR OLD.kind IS NOT NEW.kind
  OR OLD.state IS NOT NEW.state OR OLD.urgent IS NOT NEW.urgent
BEGIN
    UPDATE item_counts SET n = n - 1
    WHERE endpoint_id = OLD.endpoint_id AND kind = OLD.kind
      AND state = OLD.state AND urgent = OLD.urgent;
    INSERT INTO item_counts (endpoint_id, kind, state, urgent, n)
    VALUES (NEW.endpoint_id, NEW.kind, NEW.state, NEW.urgent, 1)
    ON CONFLICT (endpoint_id, kind, state, urgent) DO UPDATE SET n = n + 1;
END;

-- Preloads the same way, per endpoint and state.
CREATE TABLE preload_counts (
    endpoint_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, state)
);
INSERT INTO preload_counts (endpoint_id, state, n)
SELECT endpoint_id, state, count(*) FROM preloads GROUP BY endpoint_id, state;

CREATE TRIGGER preload_counts_insert AFTER INSERT ON preloads
BEGIN
    INSERT INTO preload_counts (endpoint_id, state, n)
    VALUES (NEW.endpoint_id, NEW.state, 1)
    ON CONFLICT (endpoint_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER preload_counts_delete AFTER DELETE ON preloads
BEGIN
    UPDATE preload_counts SET n = n - 1
    WHERE endpoint_id = OLD.endpoint_id AND state = OLD.state;
END;

CREATE TRIGGER preload_counts_update AFTER UPDATE OF endpoint_id, state ON preloads
WHEN OLD.endpoint_id IS NOT NEW.endpoint_id OR OLD.state IS NOT NEW.state
BEGIN
    UPDATE preload_counts SET n = n - 1
    WHERE endpoint_id = OLD.endpoint_id AND state = OLD.state;
    INSERT INTO preload_counts (endpoint_id, state, n)
    VALUES (NEW.endpoint_id, NEW.state, 1)
    ON CONFLICT (endpoint_id, state) DO UPDATE SET n = n + 1;
END;

-- The URLs waiting for their purge before a preload are found from the
-- links that want one, not by walking the open queue.
CREATE INDEX request_items_preload ON request_items (item_id) WHERE preload = 1;

-- The oldest pending preload is the first entry here, as the oldest item
-- is of `items_pending_age`, not the end of a walk of the pending ones.
CREATE INDEX preloads_pending_age ON preloads (created_at) WHERE state = 'pending';
