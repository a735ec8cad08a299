-- The endpoints' cache policies (issue 32): what the CDN caches and for
-- how long, as `GET …/cacherules` last answered. Kept so that a restart
-- without the API still plans with the last good copy.
CREATE TABLE cache_policies (
    endpoint_id TEXT PRIMARY KEY,
    -- The API's `CachePolicy`, as JSON (booleans and numbers as strings).
    policy      TEXT NOT NULL,
    fetched_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Why a URL of a request is carried by an item of another URL: `covered`
-- (a pending directory above it, the only reason before this schema), or
-- `query_ignored` (the endpoint ignores query strings: `a.js?v=1` is the
-- cached object `a.js`, purged once). NULL reads as `covered` where
-- `requested_url` is set.
ALTER TABLE request_items ADD COLUMN link_reason TEXT
    CHECK (link_reason IN ('covered', 'query_ignored'));
