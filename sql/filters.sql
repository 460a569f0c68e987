-- requires: pairs
-- COYO-700M's filter rules, as far as the metadata can evaluate them.
--
-- Each rule is a boolean column, true when the row passes it (COYO's numbers, from its README):
--   pass_min_side      min(width, height) >= 200
--   pass_aspect_ratio  max(width, height) / min(width, height) <= 3
--   pass_nsfw          nsfw_score_opennsfw2 <= 0.5 and nsfw_score_gantman <= 0.5
--   pass_text_length   6 <= text_length <= 1000
--   pass_word_count    3 <= word_count <= 256
--   pass_text_repeats  the identical text appears at most 10 times in the whole of `pairs`
--
-- NULLs fail. COYO applied its rules to values it had computed; a NULL (or NaN) means the value
-- is unknown, and a row is kept only when it is known to pass. So a rule is false, never NULL,
-- when any column it reads is NULL or NaN (a NULL text fails pass_text_repeats; NULL texts are
-- not counted as repeats of each other). Note that DuckDB's least/greatest skip NULLs, which is
-- why the size rules are written as plain comparisons.
--
-- Views:
--   pairs_repeated_texts(text, occurrences)  texts seen more than 10 times (one GROUP BY text)
--   pairs_with_rules    every column of pairs plus the six pass_* columns
--   pairs_rules         id plus the six pass_* columns
--   pairs_filtered      the rows of pairs (all their columns) that pass every rule
--   filter_funnel(step, rule, description, removed, remaining)
--       the rules in the order above; `removed` counts the rows a rule rejects among those that
--       passed every earlier rule, `remaining` what survives it. The input row count is
--       removed + remaining of step 1; remaining of the last step is count(pairs_filtered).
--
-- Cost: pairs is scanned once for the rules; the text-repeat rule adds one hash aggregate over
-- `text` and a hash join whose build side holds only the repeated texts.

CREATE OR REPLACE TEMP VIEW pairs_repeated_texts AS
SELECT text, count(*) AS occurrences
FROM pairs
WHERE text IS NOT NULL
GROUP BY text
HAVING count(*) > 10;

CREATE OR REPLACE TEMP VIEW pairs_with_rules AS
SELECT
    p.*,
    coalesce(p.width >= 200 AND p.height >= 200, false) AS pass_min_side,
    coalesce(
        p.width > 0 AND p.height > 0
        AND p.width <= 3::BIGINT * p.height
        AND p.height <= 3::BIGINT * p.width,
        false
    ) AS pass_aspect_ratio,
    coalesce(p.nsfw_score_opennsfw2 <= 0.5 AND p.nsfw_score_gantman <= 0.5, false) AS pass_nsfw,
    coalesce(p.text_length BETWEEN 6 AND 1000, false) AS pass_text_length,
    coalesce(p.word_count BETWEEN 3 AND 256, false) AS pass_word_count,
    (p.text IS NOT NULL AND r.text IS NULL) AS pass_text_repeats
FROM pairs AS p
LEFT JOIN pairs_repeated_texts AS r ON p.text = r.text;

CREATE OR REPLACE TEMP VIEW pairs_rules AS
SELECT
    id,
    pass_min_side,
    pass_aspect_ratio,
    pass_nsfw,
    pass_text_length,
    pass_word_count,
    pass_text_repeats
FROM pairs_with_rules;

CREATE OR REPLACE TEMP VIEW pairs_filtered AS
SELECT * EXCLUDE (
    pass_min_side,
    pass_aspect_ratio,
    pass_nsfw,
    pass_text_length,
    pass_word_count,
    pass_text_repeats
)
FROM pairs_with_rules
WHERE pass_min_side
    AND pass_aspect_ratio
    AND pass_nsfw
    AND pass_text_length
    AND pass_word_count
    AND pass_text_repeats;

CREATE OR REPLACE TEMP VIEW filter_funnel AS
WITH steps (step, rule, description) AS (
    VALUES
        (1, 'min_side', 'min(width, height) >= 200'),
        (2, 'aspect_ratio', 'max(width, height) / min(width, height) <= 3'),
        (3, 'nsfw', 'nsfw_score_opennsfw2 and nsfw_score_gantman <= 0.5'),
        (4, 'text_length', 'text_length between 6 and 1000'),
        (5, 'word_count', 'word_count between 3 and 256'),
        (6, 'text_repeats', 'text appears at most 10 times')
),
first_failed AS MATERIALIZED (
    -- each row counted once, at the first rule it fails (0: passes all)
    SELECT
        CASE
            WHEN NOT pass_min_side THEN 1
            WHEN NOT pass_aspect_ratio THEN 2
            WHEN NOT pass_nsfw THEN 3
            WHEN NOT pass_text_length THEN 4
            WHEN NOT pass_word_count THEN 5
            WHEN NOT pass_text_repeats THEN 6
            ELSE 0
        END AS step,
        count(*) AS rows
    FROM pairs_rules
    GROUP BY 1
)
SELECT
    s.step,
    s.rule,
    s.description,
    coalesce(f.rows, 0)::BIGINT AS removed,
    (coalesce((SELECT sum(rows) FROM first_failed), 0)
        - sum(coalesce(f.rows, 0)) OVER (ORDER BY s.step))::BIGINT AS remaining
FROM steps AS s
LEFT JOIN first_failed AS f USING (step)
ORDER BY s.step;
