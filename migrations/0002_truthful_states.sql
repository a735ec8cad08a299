-- Second schema: what the state-machine review needed (issues 12 and 13).
-- Released databases upgrade in place: nothing here rewrites a row's
-- meaning, it only adds columns and repairs merge chains.

-- A request an operator cancelled. Its links no longer keep an item alive:
-- an item that only cancelled requests want is not sent.
ALTER TABLE requests ADD COLUMN cancelled_at TEXT;

-- The subscription and quota day charged for the batch's current attempt. A batch is
-- charged when it is cut (the call may reach the CDN from then on), again
-- for every attempt whose outcome is unknown (a timeout, a crash), and
-- refunded when the CDN's answer proves it did not count the call. NULL:
-- nothing charged for the current attempt (a batch cut by the first
-- schema, which reserved instead of charging; it is charged when sent).
ALTER TABLE batches ADD COLUMN charged_day TEXT;
ALTER TABLE batches ADD COLUMN charged_subscription TEXT;

-- Merges are kept one level deep: an item merged into an item that was
-- itself merged later follows the end of the chain. The first schema could
-- leave chains two deep (a retried URL merged into its pending twin, then
-- the twin absorbed by a directory), which the `history` view read as
-- final. Repair them.
WITH RECURSIVE chain (id, root, depth) AS (
    SELECT id, merged_into, 0 FROM items
    WHERE state = 'merged' AND merged_into IS NOT NULL
    UNION ALL
    SELECT c.id, m.merged_into, c.depth + 1 FROM chain c
    JOIN items m ON m.id = c.root
    WHERE m.state = 'merged' AND m.merged_into IS NOT NULL AND c.depth < 64
)
UPDATE items SET merged_into = (
    SELECT c.root FROM chain c WHERE c.id = items.id ORDER BY c.depth DESC LIMIT 1
)
WHERE id IN (SELECT id FROM chain WHERE depth > 0);


-- Why what is pending is not sent now, while that lasts: one row per
-- scope ('sender': sending paused; 'quota:file', 'quota:directory': the
-- day's quota of that kind is spent), with until when (NULL: until an
-- operator acts). Kept by the daemon as things change; the `queue` view
-- and the API read it, so every waiting URL says why.
CREATE TABLE waits (
    scope  TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    until  TEXT
) WITHOUT ROWID;

DROP VIEW queue;
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
        WHEN i.state = 'pending' AND s.reason IS NOT NULL
            THEN s.reason || coalesce(' (until ' || s.until || ')', '')
        WHEN i.state = 'pending' AND i.not_before > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
            THEN 'waiting to retry at ' || i.not_before
        WHEN i.state = 'pending' AND q.reason IS NOT NULL
            THEN q.reason || coalesce(' (until ' || q.until || ')', '')
        WHEN i.state = 'pending' AND i.attempts = 0 THEN 'waiting for a batch'
        WHEN i.state = 'pending' THEN 'waiting to retry'
        WHEN i.state = 'sending' THEN 'being sent'
        ELSE 'sent, waiting for the final result'
    END AS why
FROM items i
LEFT JOIN waits s ON s.scope = 'sender'
LEFT JOIN waits q ON q.scope = 'quota:' || i.kind
WHERE i.state IN ('pending', 'sending', 'submitted')
ORDER BY i.endpoint_id, i.not_before, i.id;
