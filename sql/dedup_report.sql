-- What deduplication found, per method of `dup_groups`.
--
-- `dup_summary`: groups, rows in groups, rows removed (members that are not keepers) and the
-- largest group. `dup_group_sizes`: how many groups fall in each size bucket (2, 3, 4-5, 6-10,
-- 11-100, 101+), with the rows they hold.
-- requires: dup_groups

CREATE OR REPLACE TEMP VIEW dup_summary AS
SELECT
    method,
    count(DISTINCT group_id) AS groups,
    count(*) AS rows_in_groups,
    count(*) FILTER (WHERE NOT keeper) AS removed,
    max(group_size) AS largest_group
FROM dup_groups
GROUP BY method;

CREATE OR REPLACE TEMP VIEW dup_group_sizes AS
WITH sized AS (
    SELECT
        method,
        group_size,
        CASE
            WHEN group_size <= 3 THEN group_size
            WHEN group_size <= 5 THEN 4
            WHEN group_size <= 10 THEN 6
            WHEN group_size <= 100 THEN 11
            ELSE 101
        END AS size_bucket_min
    FROM dup_groups
    WHERE keeper
)
SELECT
    method,
    size_bucket_min,
    CASE size_bucket_min
        WHEN 2 THEN '2' WHEN 3 THEN '3' WHEN 4 THEN '4-5' WHEN 6 THEN '6-10'
        WHEN 11 THEN '11-100' ELSE '101+'
    END AS group_size,
    count(*) AS groups,
    CAST(sum(group_size) AS BIGINT) AS rows_in_groups
FROM sized
GROUP BY method, size_bucket_min;
