-- COYO-700M's own exact dedup rules, as groups over `pairs` (read by coyo_db.dedup.rules).
--
-- Each view returns one row per member of a duplicate group: id, group_id (the smallest
-- id of the group, so reruns give the same ids), group_size, and the two CLIP similarities the
-- keeper rule reads (NULL where unknown). A NULL key never groups: rows with no url, text or
-- image_phash are in no group of a rule that reads that column.
--
--   dup_rule_phash_text   rows sharing (image_phash, text): COYO's (image_phash, text) rule
--   dup_rule_url          rows sharing a url
--   dup_rule_text         rows sharing a text; COYO's rule is `dup_rule_text_over(10)` (a text
--                         seen more than 10 times): the group is every row with that text.
--                         COYO removed all of them, as `pairs_filtered` (sql/filters.sql) does.
--   dup_rule_text_over(n) rows of the texts seen more than n times (dup_rule_text is n = 1)
--
-- Cost: two scans of `pairs`. The first counts the 64-bit hash of each key (8 bytes a row, so
-- the count stays in memory at 100M rows where a window over the strings themselves spills);
-- the second keeps the rows whose hash repeats and groups those by the key itself (a GROUP BY
-- joined back: cheaper than a window over the strings). The result is exact: rows sharing a
-- key share its hash, and a row whose hash only collides with another key's is dropped by the
-- exact group's own count.
-- requires: pairs

CREATE OR REPLACE TEMP VIEW dup_rule_phash_text AS
WITH counted AS (
    SELECT hash(image_phash, text) AS h, count(*) AS n
    FROM pairs
    WHERE image_phash IS NOT NULL AND text IS NOT NULL
    GROUP BY h
),
candidates AS MATERIALIZED (
    SELECT id, image_phash, text, clip_similarity_vitl14, clip_similarity_vitb32
    FROM pairs
    WHERE image_phash IS NOT NULL AND text IS NOT NULL
        AND hash(image_phash, text) IN (SELECT h FROM counted WHERE n > 1)
),
grouped AS (
    SELECT image_phash, text, min(id) AS group_id, count(*) AS n
    FROM candidates
    GROUP BY image_phash, text
)
SELECT
    id,
    group_id,
    CAST(n AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM candidates JOIN grouped USING (image_phash, text)
WHERE n > 1;

CREATE OR REPLACE TEMP VIEW dup_rule_url AS
WITH counted AS (
    SELECT hash(url) AS h, count(*) AS n FROM pairs WHERE url IS NOT NULL GROUP BY h
),
candidates AS MATERIALIZED (
    SELECT id, url, clip_similarity_vitl14, clip_similarity_vitb32
    FROM pairs
    WHERE url IS NOT NULL AND hash(url) IN (SELECT h FROM counted WHERE n > 1)
),
grouped AS (
    SELECT url, min(id) AS group_id, count(*) AS n FROM candidates GROUP BY url
)
SELECT
    id,
    group_id,
    CAST(n AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM candidates JOIN grouped USING (url)
WHERE n > 1;

CREATE OR REPLACE TEMP MACRO dup_rule_text_over(min_count) AS TABLE
WITH counted AS (
    SELECT hash(text) AS h, count(*) AS n FROM pairs WHERE text IS NOT NULL GROUP BY h
),
candidates AS MATERIALIZED (
    SELECT id, text, clip_similarity_vitl14, clip_similarity_vitb32
    FROM pairs
    WHERE text IS NOT NULL AND hash(text) IN (SELECT h FROM counted WHERE n > min_count)
),
grouped AS (
    SELECT text, min(id) AS group_id, count(*) AS n FROM candidates GROUP BY text
)
SELECT
    id,
    group_id,
    CAST(n AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM candidates JOIN grouped USING (text)
WHERE n > min_count;

CREATE OR REPLACE TEMP VIEW dup_rule_text AS SELECT * FROM dup_rule_text_over(1);
