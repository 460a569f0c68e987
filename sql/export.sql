-- Rows an export leaves out by default because deduplication did not keep them.
--
-- `export_duplicate_ids`: every id that some duplicate group of `dup_groups` (any method present:
-- pHash, COYO's text rules, semantic) marks as a non-keeper, once each. `coyo-db export` drops
-- these unless --keep-duplicates; it is the same rule as the `pairs_unique` view.
-- requires: dup_groups

CREATE OR REPLACE TEMP VIEW export_duplicate_ids AS
SELECT DISTINCT id
FROM dup_groups
WHERE NOT keeper AND id IS NOT NULL;
