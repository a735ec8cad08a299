-- Purge by tag (issue 35): which URL carries which tags. Fed by
-- `POST /v1/tags`, learned from response headers (`Cache-Tag`,
-- `Surrogate-Key`, `xkey`) where purgeq fetches a URL, and from the
-- origin's access log. `POST /v1/purges` with `"tags"` expands each tag to
-- its URLs at that moment.
--
-- One row per URL (normalized as purge intents are), with when it was
-- last seen: past `tags.max_urls`, the least recently seen are dropped.
CREATE TABLE tagged_urls (
    id       INTEGER PRIMARY KEY,
    url      TEXT NOT NULL UNIQUE,
    -- Who said so last: `api`, `header`, `access_log`.
    source   TEXT NOT NULL,
    seen_at  TEXT NOT NULL
);
CREATE INDEX tagged_urls_seen ON tagged_urls (seen_at, id);

-- A tag of a URL. The key leads with the tag: expanding a tag is one
-- index range.
CREATE TABLE url_tags (
    tag     TEXT NOT NULL,
    url_id  INTEGER NOT NULL REFERENCES tagged_urls (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, url_id)
) WITHOUT ROWID;
CREATE INDEX url_tags_url ON url_tags (url_id);

-- The registry's size and what its bound dropped, kept as URLs come and
-- go (counting a million rows on every feed would cost more than the
-- feed).
CREATE TABLE tag_registry (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    urls     INTEGER NOT NULL DEFAULT 0,
    dropped  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tag_registry (id, urls, dropped) VALUES (1, 0, 0);

-- The tags a purge request named and how many URLs each gave then (0: the
-- registry did not know it).
CREATE TABLE request_tags (
    request_id  TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    urls        INTEGER NOT NULL,
    PRIMARY KEY (request_id, tag)
);

-- The tag a URL of a request came from (the first, when several gave it).
ALTER TABLE request_items ADD COLUMN via_tag TEXT;
