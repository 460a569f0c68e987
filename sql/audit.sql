-- Contamination audit views over `contamination` (written by `coyo-db audit`).
--
-- `contamination` holds only the hits at the audit's default operating point, one row per
-- (dataset id, refset, reference) with its method and evidence; an id is contaminated when it
-- has any row there. `contamination_summary` counts hits, distinct ids, references and groups
-- of near-identical references (`ref_group`; null in rows of audits before groups existed:
-- each reference its own group) per refset and method; `contaminated_ids` lists each
-- contaminated id once with its strongest hit (highest score), which is what exports leave
-- out by default.
-- requires: contamination

CREATE OR REPLACE TEMP VIEW contamination_summary AS
SELECT
    refset,
    method,
    count(*) AS hits,
    count(DISTINCT id) AS images,
    count(DISTINCT ref_id) AS references_hit,
    count(DISTINCT coalesce(ref_group, ref_id)) AS groups_hit,
    median(score) AS median_score
FROM contamination
GROUP BY refset, method
ORDER BY refset, hits DESC;

CREATE OR REPLACE TEMP VIEW contaminated_ids AS
SELECT id, refset, ref_path, method, score, hamming, cosine, inliers, count_refs
FROM (
    SELECT
        *,
        count(*) OVER (PARTITION BY id) AS count_refs,
        row_number() OVER (PARTITION BY id ORDER BY score DESC, refset, ref_id) AS rank
    FROM contamination
)
WHERE rank = 1;
