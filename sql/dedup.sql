-- Survivors of deduplication: `pairs` without the rows some duplicate group did not keep.
--
-- `dup_groups` (written by `coyo-db dedup ...`) holds every member of every duplicate group of
-- every method, with exactly one keeper per (method, group_id). A row is dropped from
-- `pairs_unique` when any method marks it a non-keeper; run one method only (or filter
-- `dup_groups` on `method`) to dedup by that method alone. Methods run with different keeper
-- rules can each drop the other's keeper of overlapping groups: use one rule for all methods.
-- requires: dup_groups, pairs

CREATE OR REPLACE TEMP VIEW pairs_unique AS
SELECT p.*
FROM pairs AS p
ANTI JOIN (SELECT DISTINCT id FROM dup_groups WHERE NOT keeper) AS d ON p.id = d.id;
