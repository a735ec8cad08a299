-- As migrations/0013_queue_counts.sql on SQLite: counts kept as items and
-- preloads change (issue 31), read as a handful of rows.
--
-- Unlike SQLite, several nodes write at once here. A trigger that updated
-- a count row per item would make every node's intake wait on the same
-- row until the other commits (and two transactions taking two count
-- rows in opposite orders would deadlock). So each statement appends its
-- net changes to `*_count_deltas` (appending takes no row lock), and the
-- counts are `*_counts` plus the deltas; `Store::fold_counts`, run by
-- every node now and then, moves the deltas into `*_counts` in one
-- statement. The delta tables are the fleet's own: SQLite's triggers
-- update the counts directly (one writer).
CREATE TABLE item_counts (
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    urgent      BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, kind, state, urgent)
);
CREATE TABLE item_count_deltas (
    endpoint_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    urgent      BIGINT NOT NULL,
    n           BIGINT NOT NULL
);
-- Taken before counting, so no write of items falls between the count
-- and the triggers that follow it.
LOCK TABLE items IN SHARE MODE;
INSERT INTO item_counts (endpoint_id, kind, state, urgent, n)
SELECT endpoint_id, kind, state, urgent, count(*) FROM items
GROUP BY endpoint_id, kind, state, urgent;

CREATE FUNCTION item_count_deltas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO item_count_deltas (endpoint_id, kind, state, urgent, n)
        SELECT endpoint_id, kind, state, urgent, count(*) FROM new_rows
        GROUP BY endpoint_id, kind, state, urgent;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO item_count_deltas (endpoint_id, kind, state, urgent, n)
        SELECT endpoint_id, kind, state, urgent, -count(*) FROM old_rows
        GROUP BY endpoint_id, kind, state, urgent;
    ELSE
        INSERT INTO item_count_deltas (endpoint_id, kind, state, urgent, n)
        SELECT endpoint_id, kind, state, urgent, sum(d) FROM (
            SELECT endpoint_id, kind, state, urgent, -1 AS d FROM old_rows
            UNION ALL
            SELECT endpoint_id, kind, state, urgent, 1 FROM new_rows
        ) AS changed
        GROUP BY endpoint_id, kind, state, urgent HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER item_counts_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_count_deltas();
CREATE TRIGGER item_counts_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_count_deltas();
CREATE TRIGGER item_counts_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION item_count_deltas();

CREATE TABLE preload_counts (
    endpoint_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, state)
);
CREATE TABLE preload_count_deltas (
    endpoint_id TEXT NOT NULL,
    state       TEXT NOT NULL,
    n           BIGINT NOT NULL
);
LOCK TABLE preloads IN SHARE MODE;
INSERT INTO preload_counts (endpoint_id, state, n)
SELECT endpoint_id, state, count(*) FROM preloads GROUP BY endpoint_id, state;

CREATE FUNCTION preload_count_deltas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO preload_count_deltas (endpoint_id, state, n)
        SELECT endpoint_id, state, count(*) FROM new_rows GROUP BY endpoint_id, state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO preload_count_deltas (endpoint_id, state, n)
        SELECT endpoint_id, state, -count(*) FROM old_rows GROUP BY endpoint_id, state;
    ELSE
        INSERT INTO preload_count_deltas (endpoint_id, state, n)
        SELECT endpoint_id, state, sum(d) FROM (
            SELECT endpoint_id, state, -1 AS d FROM old_rows
            UNION ALL
            SELECT endpoint_id, state, 1 FROM new_rows
        ) AS changed
        GROUP BY endpoint_id, state HAVING sum(d) <> 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER preload_counts_insert AFTER INSERT ON preloads
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION preload_count_deltas();
CREATE TRIGGER preload_counts_delete AFTER DELETE ON preloads
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION preload_count_deltas();
CREATE TRIGGER preload_counts_update AFTER UPDATE ON preloads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION preload_count_deltas();

-- The URLs waiting for their purge before a preload are found from the
-- links that want one, not by walking the open queue.
CREATE INDEX request_items_preload ON request_items (item_id) WHERE preload = 1;

-- The oldest pending preload is the first entry here, as the oldest item
-- is of `items_pending_age`, not the end of a walk of the pending ones.
CREATE INDEX preloads_pending_age ON preloads (created_at) WHERE state = 'pending';
