-- The origin stage reads due purges one layer at a time (issue 34): a
-- layer that is down is not read at all, so its backlog costs nothing
-- while it is down. Reading across layers and filtering the down ones
-- walked every pending row on each wake (each intake), which halved
-- intake with two layers down (`PURGEQ_BENCH_ORIGIN_CACHES=2 cargo bench
-- --bench ingest`). The per-layer index serves the counts per layer too.
CREATE INDEX origin_purges_due_by_layer ON origin_purges (layer, not_before) WHERE state = 'pending';
DROP INDEX origin_purges_due;

-- A URL a layer must purge first is stored held (`not_before` at the far
-- future) and its layers' rows are written by the origin stage, not in
-- the statements that accept it: the held items whose rows are not
-- written yet are found by this index, newest last.
CREATE INDEX items_held ON items (id) WHERE state = 'pending' AND not_before = '9999-12-31T23:59:59.999Z';
