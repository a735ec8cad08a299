-- The quota ledger in two parts, as migrations/0006_uncertain_charges.sql
-- on SQLite: `*_used` certain (and under way), `*_uncertain` may have
-- been counted by the CDN.
ALTER TABLE quota_days ADD COLUMN files_uncertain BIGINT NOT NULL DEFAULT 0;
ALTER TABLE quota_days ADD COLUMN directories_uncertain BIGINT NOT NULL DEFAULT 0;
ALTER TABLE quota_days ADD COLUMN preloads_uncertain BIGINT NOT NULL DEFAULT 0;
