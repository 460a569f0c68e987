-- requires: labels, taxonomies
-- Labels, one row per (image, rank), with the class each index names.
--
-- `labels` stores each image's top-k classes as two parallel lists, best first: `labels` (class
-- indices into the taxonomy the row's `taxonomy` column names) and `label_probs` (their
-- probabilities, descending; COYO-Labeled-300M's are independent per class and need not sum
-- to 1). `taxonomies` holds each taxonomy's classes (index, wnid, name, definition).
--
-- Views:
--   labels_long(id, taxonomy, model, rank, label, wnid, name, prob)
--       one row per element of the lists; rank 0 is the best class. wnid and name come from
--       `taxonomies`; they are NULL for an index the taxonomy does not have (ingest refuses
--       such rows, so this only happens for tables written by other means).
--
-- Cost: one scan of `labels`; the three unnests run in lockstep over the same list offsets
-- (generate_subscripts numbers the elements), and the join's build side is the taxonomy
-- (21,841 rows for ImageNet-21k). A filter on id, taxonomy or model is applied before the
-- lists are unnested; to select images by class, `list_contains(labels, k)` on `labels` avoids
-- unnesting the rows that lack it.

CREATE OR REPLACE TEMP VIEW labels_long AS
WITH ranked AS (
    SELECT
        id,
        taxonomy,
        model,
        CAST(generate_subscripts(labels, 1) - 1 AS INTEGER) AS rank,
        unnest(labels) AS label,
        unnest(label_probs) AS prob
    FROM labels
)
SELECT
    r.id,
    r.taxonomy,
    r.model,
    r.rank,
    r.label,
    t.wnid,
    t.name,
    r.prob
FROM ranked AS r
LEFT JOIN taxonomies AS t
    ON t.taxonomy = r.taxonomy AND t."index" = r.label;
