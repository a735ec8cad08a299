-- Search over the whole retained history (issue 36; SQLite's migration
-- 0016 says why). URLs compare byte by byte (COLLATE "C", as SQLite's
-- BINARY does), so a prefix is a range of the index whatever the
-- database's collation.
CREATE INDEX items_url ON items ((url COLLATE "C"));
CREATE INDEX request_items_requested_url ON request_items ((requested_url COLLATE "C"))
    WHERE requested_url IS NOT NULL;
CREATE INDEX batches_task_track ON batches (task_track_id) WHERE task_track_id IS NOT NULL;
CREATE INDEX requests_received ON requests (received_at, id);
CREATE INDEX requests_label ON requests (label, received_at, id) WHERE label IS NOT NULL;
