-- The status page's charts (issue 19): drawn from the database so they
-- survive restarts.

-- One row per CDN API call and how it ended, in four words: 'accepted'
-- (a purge or preload taken, a progress answer read), 'throttled'
-- (RequestThrottled), 'transient' (a fault that is retried: 5xx, timeout,
-- clock skew, an unreadable answer), 'refused' (any other error answer).
-- `operation`: purge, preload, query, preload_query. Written in small
-- groups every few seconds (a crash loses at most those seconds of
-- chart data, never a URL); removed with the rest of the history by
-- retention.
CREATE TABLE calls (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    operation TEXT NOT NULL,
    outcome   TEXT NOT NULL CHECK (outcome IN ('accepted', 'throttled', 'transient', 'refused'))
);
CREATE INDEX calls_at ON calls (at);

-- Quota used through the day: the accepted calls of a day, by time.
CREATE INDEX batches_accepted ON batches (accepted_at) WHERE accepted_at IS NOT NULL;
