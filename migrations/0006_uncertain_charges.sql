-- The quota ledger in two parts (issue 28): `*_used` is what the CDN
-- certainly counted (accepted calls) plus the calls under way now;
-- `*_uncertain` is what it may have counted: calls whose outcome was never
-- known (a timeout, a dropped connection, a crash mid-call) and that were
-- then sent again. Uncertain charges are shown, never allowed to hold
-- sending back: the CDN's quota refusal (which costs nothing) is the
-- truth, and settles them. Before this, every uncertain charge counted as
-- used, and under faults the ledger believed the day spent after ~60 % of
-- it.
ALTER TABLE quota_days ADD COLUMN files_uncertain INTEGER NOT NULL DEFAULT 0;
ALTER TABLE quota_days ADD COLUMN directories_uncertain INTEGER NOT NULL DEFAULT 0;
ALTER TABLE quota_days ADD COLUMN preloads_uncertain INTEGER NOT NULL DEFAULT 0;
