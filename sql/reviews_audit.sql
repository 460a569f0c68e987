-- Contamination as reviewed, and the export's contamination exclusion redefined over it.
--
-- `contamination_reviewed`: the audit's hits (`contamination`) without those whose latest
-- review says `not_copy`, plus one row per (id, refset, ref_id) whose latest review says `copy`
-- and that is not a hit already (a near miss marked a copy, method `review`; its evidence is in
-- `contamination_candidates`). `reviewed` marks the rows a review confirmed or added.
--
-- `export_contaminated_ids` (first defined in export_contamination.sql) is redefined here so
-- that `coyo-db export` leaves out the reviewed contamination: an overturned hit no longer
-- excludes its id (unless another hit holds), a near miss marked a copy does.
-- requires: reviews_latest, contamination, export_contaminated_ids

CREATE OR REPLACE TEMP VIEW contamination_reviewed AS
WITH decided AS (
    SELECT id, refset, ref_id, decision
    FROM reviews_latest
    WHERE kind = 'contamination'
)
SELECT c.id, c.refset, c.ref_id, c.method, c.score, (d.id IS NOT NULL) AS reviewed
FROM contamination AS c
LEFT JOIN decided AS d
    ON d.id = c.id AND d.refset = c.refset AND d.ref_id = c.ref_id
WHERE d.decision IS DISTINCT FROM 'not_copy'
UNION ALL
SELECT d.id, d.refset, d.ref_id, 'review' AS method, NULL::FLOAT AS score, true AS reviewed
FROM decided AS d
ANTI JOIN contamination AS c
    ON d.id = c.id AND d.refset = c.refset AND d.ref_id = c.ref_id
WHERE d.decision = 'copy';

CREATE OR REPLACE TEMP VIEW export_contaminated_ids AS
SELECT DISTINCT id
FROM contamination_reviewed
WHERE id IS NOT NULL;
