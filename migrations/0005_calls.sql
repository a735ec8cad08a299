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
-- For calls that did not succeed, the CDN's answer: `error_type` (its
-- ErrorInfo.Type, or the kind of fault), `message`, `correlation_id`.
CREATE TABLE calls (
    id             INTEGER PRIMARY KEY,
    at             TEXT NOT NULL,
    operation      TEXT NOT NULL,
    outcome        TEXT NOT NULL CHECK (outcome IN ('accepted', 'throttled', 'transient', 'refused')),
    error_type     TEXT,
    message        TEXT,
    correlation_id TEXT
);
CREATE INDEX calls_at ON calls (at);
-- The status page's recent errors, newest first, without walking the
-- accepted calls.
CREATE INDEX calls_errors ON calls (id) WHERE outcome != 'accepted';

-- Quota used through the day: the accepted calls of a day, by time.
CREATE INDEX batches_accepted ON batches (accepted_at) WHERE accepted_at IS NOT NULL;
