-- Search over the whole retained history (issue 36): by URL (exact or
-- prefix), TaskTrackId, label and time, each a range of an index, never
-- a walk of the history. On a million finished items a URL is found in
-- milliseconds, whenever it was purged.

-- The URL an item purges, and the URL a request asked for when it was
-- linked to a directory (or to another copy) that covers it.
CREATE INDEX items_url ON items (url);
CREATE INDEX request_items_requested_url ON request_items (requested_url)
    WHERE requested_url IS NOT NULL;
-- The call a TaskTrackId names.
CREATE INDEX batches_task_track ON batches (task_track_id) WHERE task_track_id IS NOT NULL;
-- Requests newest first, within a time range, and those of a label.
CREATE INDEX requests_received ON requests (received_at, id);
CREATE INDEX requests_label ON requests (label, received_at, id) WHERE label IS NOT NULL;
