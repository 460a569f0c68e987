-- Duplicate groups as reviewed, and the export's duplicate exclusion redefined over them.
--
-- `dup_groups_reviewed`: `dup_groups` with `keeper` as the reviewers decided. In a group where
-- some member's latest review says `keeper`, that member is the keeper (the most recent such
-- review when several members got one) and the others are not; a member whose latest review
-- says `not_duplicate` stays whatever the keeper. Other groups keep dedup's keeper. `reviewed`
-- marks the rows a review changed or confirmed; `dedup_keeper` is what dedup decided.
--
-- `export_duplicate_ids` (first defined in export.sql) is redefined here so that
-- `coyo-db export` leaves out the non-keepers of the reviewed groups, not dedup's.
-- requires: reviews_latest, dup_groups, export_duplicate_ids

CREATE OR REPLACE TEMP VIEW dup_groups_reviewed AS
WITH chosen AS (
    SELECT g.method, g.group_id, r.id AS keeper_id
    FROM reviews_latest AS r
    JOIN dup_groups AS g ON g.method = r.method AND g.id = r.id
    WHERE r.kind = 'duplicate' AND r.decision = 'keeper'
    QUALIFY row_number() OVER (
        PARTITION BY g.method, g.group_id ORDER BY r.reviewed_at DESC, r.review_id DESC
    ) = 1
),
freed AS (
    SELECT method, id
    FROM reviews_latest
    WHERE kind = 'duplicate' AND decision = 'not_duplicate'
)
SELECT
    g.method,
    g.group_id,
    g.id,
    CASE
        WHEN f.id IS NOT NULL THEN true
        WHEN c.keeper_id IS NOT NULL THEN g.id = c.keeper_id
        ELSE g.keeper
    END AS keeper,
    g.distance,
    g.group_size,
    g.keep_rule,
    g.keeper AS dedup_keeper,
    (c.keeper_id IS NOT NULL OR f.id IS NOT NULL) AS reviewed
FROM dup_groups AS g
LEFT JOIN chosen AS c ON c.method = g.method AND c.group_id = g.group_id
LEFT JOIN freed AS f ON f.method = g.method AND f.id = g.id;

CREATE OR REPLACE TEMP VIEW export_duplicate_ids AS
SELECT DISTINCT id
FROM dup_groups_reviewed
WHERE NOT keeper AND id IS NOT NULL;
