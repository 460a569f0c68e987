-- requires: labels, taxonomies
-- Selecting images by their labels: the common cases of COYO-Labeled-style top-k labels.
--
-- Every macro reads `labels` (one row per image, taxonomy and model: `labels` class indices
-- and `label_probs` probabilities, best first, as COYO-Labeled-300M and `coyo-db label` write
-- them) and names classes through `taxonomies`. They rely on label_probs being descending
-- (ingest refuses rows that are not), so an image with no probability >= p at rank 0 has none
-- at all and is skipped before its lists are unnested. Filter the result on `taxonomy` and
-- `model` when the catalog holds labels from several models.
--
-- Macros (table macros: SELECT ... FROM labels_top1(0.5)):
--   labels_top1(p)
--       (id, taxonomy, model, label, wnid, name, prob): each image's best class, for the
--       images whose best class has probability >= p. "Take the top-1 above a threshold."
--   labels_any_topk(k, p)
--       (id, taxonomy, model, rank, label, wnid, name, prob): one row per label among an
--       image's top k whose probability is >= p (rank 0 is the best). Select images where any
--       of the top k is a class: ... FROM labels_any_topk(5, 0.1) WHERE name = 'tabby cat'.
--   labels_multihot(p)
--       (id, taxonomy, model, labels, num_classes): the sparse multi-hot target at threshold
--       p, i.e. the class indices with probability >= p, sorted ascending, and the size of the
--       taxonomy (the length of the dense vector), for images with at least one such class.
--       This is what multi-label training on COYO-Labeled consumes (COYO's ViT training
--       thresholds the top-50 probabilities).
--
-- Cost: one scan of `labels` each; rank-0 filters read only label_probs[1]; the taxonomy join
-- builds on `taxonomies` (21,841 rows for ImageNet-21k).

CREATE OR REPLACE TEMP MACRO labels_top1(p) AS TABLE
SELECT
    l.id,
    l.taxonomy,
    l.model,
    l.labels[1] AS label,
    t.wnid,
    t.name,
    l.label_probs[1] AS prob
FROM labels AS l
LEFT JOIN taxonomies AS t
    ON t.taxonomy = l.taxonomy AND t."index" = l.labels[1]
WHERE l.label_probs[1] >= p;

CREATE OR REPLACE TEMP MACRO labels_any_topk(k, p) AS TABLE
WITH ranked AS (
    SELECT
        id,
        taxonomy,
        model,
        CAST(generate_subscripts(list_slice(labels, 1, k), 1) - 1 AS INTEGER) AS rank,
        unnest(list_slice(labels, 1, k)) AS label,
        unnest(list_slice(label_probs, 1, k)) AS prob
    FROM labels
    WHERE label_probs[1] >= p
)
SELECT r.id, r.taxonomy, r.model, r.rank, r.label, t.wnid, t.name, r.prob
FROM ranked AS r
LEFT JOIN taxonomies AS t
    ON t.taxonomy = r.taxonomy AND t."index" = r.label
WHERE r.prob >= p;

CREATE OR REPLACE TEMP MACRO labels_multihot(p) AS TABLE
WITH sizes AS (
    SELECT taxonomy, count(*) AS num_classes FROM taxonomies GROUP BY taxonomy
)
SELECT
    l.id,
    l.taxonomy,
    l.model,
    list_sort(list_where(l.labels, list_transform(l.label_probs, lambda x: x >= p))) AS labels,
    s.num_classes
FROM labels AS l
LEFT JOIN sizes AS s ON s.taxonomy = l.taxonomy
WHERE l.label_probs[1] >= p;
