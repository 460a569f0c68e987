-- Scores computed by `coyo-db ingest images --scores ...`, one column per known score.
--
-- `scores` is long (id, score, value, label, scorer) so that new scorers need no schema change;
-- `image_scores` pivots the built-in ones into columns, one row per image id. A score that was
-- not computed for an image is NULL. Where two scorers produced the same score for an id (say
-- a head loaded from two checkpoints), the view shows the larger value: query `scores` and
-- filter on `scorer` to choose one.
-- requires: scores

CREATE OR REPLACE TEMP VIEW image_scores AS
SELECT
    id,
    max(value) FILTER (WHERE score = 'nsfw_nudenet') AS nsfw_nudenet,
    max(value) FILTER (WHERE score = 'nsfw_clip') AS nsfw_clip,
    CAST(max(value) FILTER (WHERE score = 'num_faces_opencv') AS INTEGER) AS num_faces_opencv,
    CAST(max(value) FILTER (WHERE score = 'num_faces_scrfd') AS INTEGER) AS num_faces_scrfd,
    max(label) FILTER (WHERE score = 'language') AS language,
    max(value) FILTER (WHERE score = 'language_prob') AS language_prob,
    CAST(max(value) FILTER (WHERE score = 'profanity') AS BOOLEAN) AS profanity,
    max(value) FILTER (WHERE score = 'aesthetic_laion_v2') AS aesthetic_laion_v2,
    max(value) FILTER (WHERE score = 'watermark_laion') AS watermark_laion
FROM scores
GROUP BY id;
