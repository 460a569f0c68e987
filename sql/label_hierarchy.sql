-- requires: labels, taxonomies, taxonomy_tree
-- Selecting images by the class hierarchy: everything under a synset ("dog, domestic dog").
--
-- `taxonomy_tree` holds (taxonomy, parent_wnid, child_wnid) edges: COYO's
-- imagenet21k_tree.pickle when it was ingested (`coyo-db ingest labels --tree`), else the
-- WordNet 3.0 hierarchy shipped with coyo-db (written by `coyo-db label` and
-- `coyo-db taxonomy hierarchy`). Synsets are WordNet ids, shared by every taxonomy that has
-- wnids: ImageNet-21k, ImageNet-1k, and a user's class list written as `wnid<TAB>name` lines.
-- WordNet is a DAG (a synset may have several parents); the walk visits each synset once.
--
-- Macros:
--   synset_descendants(synset)
--       (wnid): the synset and every synset under it. `synset` is a wnid ('n02084071') or
--       the exact name a taxonomy gives it ('dog, domestic dog, Canis familiaris'); find
--       wnids with: SELECT wnid, name FROM taxonomies WHERE name ILIKE '%dog%'.
--   labels_under(synset, p)
--       (id, taxonomy, model, rank, label, wnid, name, prob): one row per labelled image
--       with a label at probability >= p that is `synset` or lies under it: the most
--       probable such label (its rank, index, wnid, name and probability).
--
-- Cost: the walk touches only the synsets under the root (3,800 under "animal"); labels are
-- unnested only for images whose best probability is >= p (label_probs are descending).

CREATE OR REPLACE TEMP MACRO synset_descendants(synset) AS TABLE
WITH RECURSIVE roots(wnid) AS (
    SELECT synset WHERE regexp_full_match(synset, 'n[0-9]{8}')
    UNION
    SELECT wnid FROM taxonomies WHERE name = synset AND wnid IS NOT NULL
), under(wnid) AS (
    SELECT wnid FROM roots
    UNION
    SELECT t.child_wnid
    FROM taxonomy_tree AS t
    JOIN under AS u ON t.parent_wnid = u.wnid
)
SELECT wnid FROM under;

CREATE OR REPLACE TEMP MACRO labels_under(synset, p) AS TABLE
WITH classes AS (
    SELECT t.taxonomy, t."index", t.wnid, t.name
    FROM taxonomies AS t
    SEMI JOIN synset_descendants(synset) AS d ON d.wnid = t.wnid
), ranked AS (
    SELECT
        id,
        taxonomy,
        model,
        CAST(generate_subscripts(labels, 1) - 1 AS INTEGER) AS rank,
        unnest(labels) AS label,
        unnest(label_probs) AS prob
    FROM labels
    WHERE label_probs[1] >= p
)
SELECT r.id, r.taxonomy, r.model, r.rank, r.label, c.wnid, c.name, r.prob
FROM ranked AS r
JOIN classes AS c ON c.taxonomy = r.taxonomy AND c."index" = r.label
WHERE r.prob >= p
QUALIFY row_number() OVER (PARTITION BY r.id, r.taxonomy, r.model ORDER BY r.rank) = 1;
