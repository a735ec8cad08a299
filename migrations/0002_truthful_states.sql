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

