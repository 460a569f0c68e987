-- `pairs_unique` (first defined in dedup.sql) redefined over the reviewed duplicate groups, so
-- that it keeps what the export keeps: `pairs` without the rows a reviewed group does not keep.
-- requires: dup_groups_reviewed, pairs_unique

CREATE OR REPLACE TEMP VIEW pairs_unique AS
SELECT p.*
FROM pairs AS p
ANTI JOIN (SELECT DISTINCT id FROM dup_groups_reviewed WHERE NOT keeper) AS d ON p.id = d.id;
