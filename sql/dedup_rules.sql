-- COYO-700M's own exact dedup rules, as groups over `pairs` (read by coyo_db.dedup.rules).
--
-- Each view returns one row per member of a duplicate group: id, group_id (the smallest
-- id of the group, so reruns give the same ids), group_size, and the two CLIP similarities the
-- keeper rule reads (NULL where unknown). A NULL key never groups: rows with no url, text or
-- image_phash are in no group of a rule that reads that column.
--
--   dup_rule_phash_text   rows sharing (image_phash, text): COYO's (image_phash, text) rule
--   dup_rule_url          rows sharing a url
--   dup_rule_text         rows sharing a text; COYO's rule is `WHERE group_size > 10` (a text
--                         seen more than 10 times): the group is every row with that text.
--                         COYO removed all of them, as `pairs_filtered` (sql/filters.sql) does.
--
-- Cost: one scan of `pairs` and one hash partition per rule (window over the key).
-- requires: pairs

CREATE OR REPLACE TEMP VIEW dup_rule_phash_text AS
SELECT
    id,
    min(id) OVER w AS group_id,
    CAST(count(*) OVER w AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM pairs
WHERE image_phash IS NOT NULL AND text IS NOT NULL
WINDOW w AS (PARTITION BY image_phash, text)
QUALIFY count(*) OVER w > 1;

CREATE OR REPLACE TEMP VIEW dup_rule_url AS
SELECT
    id,
    min(id) OVER w AS group_id,
    CAST(count(*) OVER w AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM pairs
WHERE url IS NOT NULL
WINDOW w AS (PARTITION BY url)
QUALIFY count(*) OVER w > 1;

CREATE OR REPLACE TEMP VIEW dup_rule_text AS
SELECT
    id,
    min(id) OVER w AS group_id,
    CAST(count(*) OVER w AS INTEGER) AS group_size,
    CAST(clip_similarity_vitl14 AS DOUBLE) AS vitl14,
    CAST(clip_similarity_vitb32 AS DOUBLE) AS vitb32
FROM pairs
WHERE text IS NOT NULL
WINDOW w AS (PARTITION BY text)
QUALIFY count(*) OVER w > 1;
