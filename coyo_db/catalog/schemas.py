"""Arrow schemas of the catalog's tables, with COYO's column names and types verbatim.

COYO-700M declares id long; url, text, image_phash string; the sizes, token counts and face
count integer; the six scores float. COYO-Labeled-300M adds top-50 label indices and their
probabilities per image.
"""

from __future__ import annotations

import pyarrow as pa

PAIRS = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("url", pa.string()),
        pa.field("text", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("image_phash", pa.string()),
        pa.field("text_length", pa.int32()),
        pa.field("word_count", pa.int32()),
        pa.field("num_tokens_bert", pa.int32()),
        pa.field("num_tokens_gpt", pa.int32()),
        pa.field("num_faces", pa.int32()),
        pa.field("clip_similarity_vitb32", pa.float32()),
        pa.field("clip_similarity_vitl14", pa.float32()),
        pa.field("nsfw_score_opennsfw2", pa.float32()),
        pa.field("nsfw_score_gantman", pa.float32()),
        pa.field("watermark_score", pa.float32()),
        pa.field("aesthetic_score_laion_v2", pa.float32()),
    ]
)

SCORE_COLUMNS: tuple[str, ...] = (
    "clip_similarity_vitb32",
    "clip_similarity_vitl14",
    "nsfw_score_opennsfw2",
    "nsfw_score_gantman",
    "watermark_score",
    "aesthetic_score_laion_v2",
)

# COYO-Labeled-300M as published (its input files), before it is normalised into `labels`.
COYO_LABELED = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("url", pa.string()),
        pa.field("imagehash", pa.string()),
        pa.field("labels", pa.list_(pa.int32())),
        pa.field("label_probs", pa.list_(pa.float32())),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)

LABELS = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("taxonomy", pa.string()),
        pa.field("model", pa.string()),  # the model spec, or coyo-labeled-300m for COYO's rows
        pa.field("labels", pa.list_(pa.int32())),
        pa.field("label_probs", pa.list_(pa.float32())),
    ]
)

TAXONOMIES = pa.schema(
    [
        pa.field("taxonomy", pa.string()),
        pa.field("index", pa.int32()),
        pa.field("wnid", pa.string()),
        pa.field("name", pa.string()),
        pa.field("definition", pa.string()),
    ]
)

# Bad records of every ingest job: nothing is dropped silently.
QUARANTINE = pa.schema(
    [
        pa.field("table_name", pa.string()),
        pa.field("input", pa.string()),  # the input file or shard the record came from
        pa.field("fingerprint", pa.string()),
        pa.field("row_index", pa.int64()),
        pa.field("id", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("record", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)

# The ledger: one row per input (file or shard) an ingest finished: what makes re-ingest a no-op.
LEDGER = pa.schema(
    [
        pa.field("table_name", pa.string()),
        pa.field("input", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("rows_read", pa.int64()),
        pa.field("rows_written", pa.int64()),
        pa.field("rows_quarantined", pa.int64()),
        pa.field("table_version", pa.int64()),
        pa.field("run_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

# The job log: what ran, on what, with which options, how it ended, the counts, and the table
# versions it wrote. A row is written with status `running` when the job starts and completed
# when it ends (ok, failed, interrupted); a job killed outright stays `running`.
RUNS = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("command", pa.string()),
        pa.field("arguments", pa.string()),  # JSON object
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("status", pa.string()),
        pa.field("rows_read", pa.int64()),
        pa.field("rows_written", pa.int64()),
        pa.field("rows_quarantined", pa.int64()),
        pa.field("tool_version", pa.string()),
        pa.field("tables_written", pa.string()),  # JSON object: table -> Lance version
        pa.field("error", pa.string()),  # why a failed run failed
    ]
)

# Per-image facts computed by `ingest images`, keyed by id; `shard` and `member` find the image
# again for exports. `phash` is `image_phash` as an unsigned 64-bit integer for Hamming work.
# `data_offset` is where the image's bytes start in a tar shard (`bytes` long), so that one image
# is one read (null for other shards and for rows ingested before the column existed).
IMAGES = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("id_origin", pa.string()),  # json | url | key | hash: where the id came from
        pa.field("key", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("member", pa.string()),
        pa.field("image_phash", pa.string()),
        pa.field("phash", pa.uint64()),
        pa.field("bytes", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("data_offset", pa.int64()),
    ]
)

# Scores in long form: one row per (id, score); `value` for numbers, `label` for text results
# (a language code). The view `image_scores` pivots the known scores into columns.
SCORES = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("score", pa.string()),
        pa.field("value", pa.float32()),
        pa.field("label", pa.string()),
        pa.field("scorer", pa.string()),
    ]
)


# Parent -> child edges of a taxonomy's hierarchy (WordNet hypernyms for the ImageNet ones).
TAXONOMY_TREE = pa.schema(
    [
        pa.field("taxonomy", pa.string()),
        pa.field("parent_wnid", pa.string()),
        pa.field("child_wnid", pa.string()),
    ]
)

# Duplicate groups of every dedup method; `keeper` marks the one row of a group that stays.
DUP_GROUPS = pa.schema(
    [
        pa.field("method", pa.string()),
        pa.field("group_id", pa.int64()),
        pa.field("id", pa.int64()),
        pa.field("keeper", pa.bool_()),
        pa.field("distance", pa.int32()),
        pa.field("group_size", pa.int32()),
        pa.field("keep_rule", pa.string()),
    ]
)

# One row per registered reference set; `path` is the folder it was registered from.
REFSETS = pa.schema(
    [
        pa.field("refset", pa.string()),
        pa.field("path", pa.string()),
        pa.field("layout", pa.string()),
        pa.field("images", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("low_info", pa.int64()),
        pa.field("descriptor", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# One row per reference of a reference set, keyed by (refset, ref_id).
REFSET_IMAGES = pa.schema(
    [
        pa.field("refset", pa.string()),
        pa.field("ref_id", pa.int64()),
        pa.field("ref_path", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("member", pa.string()),
        pa.field("image_phash", pa.string()),
        pa.field("phash", pa.uint64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("low_info", pa.bool_()),
        pa.field("low_info_reason", pa.string()),
        # the smallest ref_id of its group of near-identical references (itself when alone)
        pa.field("ref_group", pa.int64()),
    ]
)

# The evidence of one contamination hit: which image copies which reference, by what method.
_EVIDENCE = [
    pa.field("id", pa.int64()),
    pa.field("refset", pa.string()),
    pa.field("ref_id", pa.int64()),
    pa.field("ref_path", pa.string()),
    pa.field("method", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("hamming", pa.int32()),
    pa.field("cosine", pa.float32()),
    pa.field("inliers", pa.int32()),
    pa.field("coverage", pa.float32()),
    pa.field("flipped", pa.bool_()),
    pa.field("shard", pa.string()),
    pa.field("member", pa.string()),
    pa.field("run_id", pa.string()),
]
_GROUP = pa.field("ref_group", pa.int64())  # the reference's group (refset_images.ref_group)
CONTAMINATION = pa.schema([*_EVIDENCE, _GROUP])
# Every candidate an audit verified, hit or not, with the reference's low-information flag.
CONTAMINATION_CANDIDATES = pa.schema(
    [
        *_EVIDENCE,
        pa.field("found_by", pa.string()),  # knn | phash | knn+phash
        pa.field("low_info", pa.bool_()),
        pa.field("hit", pa.bool_()),
        _GROUP,
        pa.field("layout", pa.float32()),  # colour-layout similarity, where computed
    ]
)


# Reviewers' decisions on what dedup and the audit decided (`coyo-db review`, the web app):
# who (`reviewer`), when (`reviewed_at`), what (`kind` and the subject: `id` with the dedup
# `method`, or `id` with the reference `refset`/`ref_id`), the `decision` and a `note`. The
# latest decision on a subject counts; exports honour them (sql/reviews*.sql).
REVIEWS = pa.schema(
    [
        pa.field("review_id", pa.string()),
        pa.field("kind", pa.string()),  # duplicate | contamination
        pa.field("decision", pa.string()),  # keeper | not_duplicate | copy | not_copy
        pa.field("id", pa.int64()),
        pa.field("method", pa.string()),  # the dedup method (duplicate reviews)
        pa.field("group_id", pa.int64()),  # the id's group when reviewed, for the record
        pa.field("refset", pa.string()),  # the reference (contamination reviews)
        pa.field("ref_id", pa.int64()),
        pa.field("reviewer", pa.string()),
        pa.field("reviewed_at", pa.timestamp("us", tz="UTC")),
        pa.field("note", pa.string()),
    ]
)


def embeddings_schema(image_dim: int | None, text_dim: int | None) -> pa.Schema:
    """`embeddings__<model>`: float16 vectors per id, image and/or text, and CLIP similarity."""
    fields = [pa.field("id", pa.int64())]
    if image_dim:
        fields.append(pa.field("image_embedding", pa.list_(pa.float16(), image_dim)))
    if text_dim:
        fields.append(pa.field("text_embedding", pa.list_(pa.float16(), text_dim)))
    if image_dim and text_dim:
        fields.append(pa.field("clip_similarity", pa.float32()))
    return pa.schema(fields)


def refset_descriptors_schema(dim: int) -> pa.Schema:
    """`refset_descriptors__<descriptor>`: a reference's copy descriptor (``descriptor_flip``,
    its mirror image's, was written by earlier versions and is null now)."""
    return pa.schema(
        [
            pa.field("refset", pa.string()),
            pa.field("ref_id", pa.int64()),
            pa.field("descriptor", pa.list_(pa.float16(), dim)),
            pa.field("descriptor_flip", pa.list_(pa.float16(), dim)),
        ]
    )


def descriptors_schema(dim: int) -> pa.Schema:
    """`descriptors__<descriptor>`: a dataset image's copy descriptor, stored by its first
    audit, and why it is low-information (null: it is not)."""
    return pa.schema(
        [
            pa.field("id", pa.int64()),
            pa.field("descriptor", pa.list_(pa.float16(), dim)),
            pa.field("low_info_reason", pa.string()),
        ]
    )
