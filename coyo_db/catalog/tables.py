"""The registry of the catalog's tables: each table's name, Arrow schema and key, once.

Every module that reads or writes a table names it through a :class:`TableSpec` of this module
(``tables.PAIRS.name``, ``catalog.ensure(tables.IMAGES)``); the schemas themselves are defined
in :mod:`coyo_db.catalog.schemas`. Tables of a model family are made by a function:
``embeddings("open_clip:ViT-B-32:laion2b", 512, 512)`` is ``embeddings__open_clip_vit_b_32_laion2b``
and ``refset_descriptors("effnet-lite0", 1280)`` is ``refset_descriptors__effnet_lite0``
(``descriptors(...)``: ``descriptors__effnet_lite0``, the audited dataset images' own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from coyo_db.catalog import schemas
from coyo_db.errors import CatalogError

EMBEDDINGS_PREFIX = "embeddings__"
REFSET_DESCRIPTORS_PREFIX = "refset_descriptors__"
DESCRIPTORS_PREFIX = "descriptors__"


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: its `name`, Arrow `schema`, the columns that key a row, and what it
    holds (`doc`)."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    doc: str

    def empty(self) -> pa.Table:
        """An empty Arrow table with this schema."""
        return self.schema.empty_table()

    def from_pylist(self, rows: list[dict]) -> pa.Table:
        """Rows (dicts by column name) as an Arrow table with this schema."""
        return pa.Table.from_pylist(rows, schema=self.schema)


PAIRS = TableSpec(
    "pairs",
    schemas.PAIRS,
    ("id",),
    "image-text pairs: COYO-700M's columns, verbatim names and types",
)
LABELS = TableSpec(
    "labels",
    schemas.LABELS,
    ("id", "taxonomy", "model"),
    "top-k labels per image over a taxonomy, COYO-Labeled-300M's or a model's (`model`)",
)
TAXONOMIES = TableSpec(
    "taxonomies",
    schemas.TAXONOMIES,
    ("taxonomy", "index"),
    "class lists: a taxonomy's label index, WordNet id, name and definition",
)
TAXONOMY_TREE = TableSpec(
    "taxonomy_tree",
    schemas.TAXONOMY_TREE,
    ("taxonomy", "parent_wnid", "child_wnid"),
    "parent -> child edges of a taxonomy's hierarchy",
)
QUARANTINE = TableSpec(
    "quarantine",
    schemas.QUARANTINE,
    ("table_name", "fingerprint", "row_index"),
    "bad records of every ingest job, with the reason",
)
LEDGER = TableSpec(
    "ledger",
    schemas.LEDGER,
    ("table_name", "fingerprint"),
    "the input files and shards each table holds, by content: what makes ingest resumable",
)
RUNS = TableSpec(
    "runs",
    schemas.RUNS,
    ("run_id",),
    "the job log: one row per command that changed the catalog",
)
IMAGES = TableSpec(
    "images",
    schemas.IMAGES,
    ("id",),
    "per-image facts computed from the image bytes: phash, size, format, where it is",
)
SCORES = TableSpec(
    "scores",
    schemas.SCORES,
    ("id", "score"),
    "computed scores in long form: one row per (id, score)",
)
DUP_GROUPS = TableSpec(
    "dup_groups",
    schemas.DUP_GROUPS,
    ("method", "id"),
    "duplicate groups of every dedup method, with the keeper of each group",
)
CONTAMINATION = TableSpec(
    "contamination",
    schemas.CONTAMINATION,
    ("id", "refset", "ref_id", "method"),
    "audit hits: images that copy a reference, with the evidence",
)
CONTAMINATION_CANDIDATES = TableSpec(
    "contamination_candidates",
    schemas.CONTAMINATION_CANDIDATES,
    ("id", "refset", "ref_id", "method"),
    "every candidate an audit verified, hit or not",
)
REFSETS = TableSpec(
    "refsets",
    schemas.REFSETS,
    ("refset",),
    "registered reference (evaluation) sets",
)
REFSET_IMAGES = TableSpec(
    "refset_images",
    schemas.REFSET_IMAGES,
    ("refset", "ref_id"),
    "the references of every reference set: path, phash, size, low-information flag",
)
REVIEWS = TableSpec(
    "reviews",
    schemas.REVIEWS,
    ("review_id",),
    "reviewers' decisions on duplicate groups and contamination hits; exports honour them",
)

#: every fixed-name table, by name
FIXED: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        PAIRS,
        LABELS,
        TAXONOMIES,
        TAXONOMY_TREE,
        QUARANTINE,
        LEDGER,
        RUNS,
        IMAGES,
        SCORES,
        DUP_GROUPS,
        CONTAMINATION,
        CONTAMINATION_CANDIDATES,
        REFSETS,
        REFSET_IMAGES,
        REVIEWS,
    )
}


def slug(name: str) -> str:
    """A model or descriptor spec as a table-name suffix: ``open_clip:ViT-B-32:laion2b`` ->
    ``open_clip_vit_b_32_laion2b``; a checkpoint path contributes its file stem only. A slug is
    its own slug."""
    family, _, argument = name.partition(":")
    parts = [family.strip()]
    for part in argument.strip().split(":") if argument.strip() else ():
        if "/" in part or "\\" in part:
            part = re.split(r"[/\\]", part)[-1].rsplit(".", 1)[0]
        parts.append(part)
    return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")


def embeddings_name(model: str) -> str:
    """The name of model `model`'s embeddings table (a spec or its slug)."""
    return EMBEDDINGS_PREFIX + slug(model)


def embeddings(model: str, image_dim: int | None, text_dim: int | None) -> TableSpec:
    """`embeddings__<model>`: float16 image and/or text vectors per id, and CLIP similarity
    when the model has both."""
    return TableSpec(
        embeddings_name(model),
        schemas.embeddings_schema(image_dim, text_dim),
        ("id",),
        f"embeddings of model {model}",
    )


def refset_descriptors_name(descriptor: str) -> str:
    """The name of descriptor `descriptor`'s reference-descriptor table (a spec or its slug)."""
    return REFSET_DESCRIPTORS_PREFIX + slug(descriptor)


def refset_descriptors(descriptor: str, dim: int) -> TableSpec:
    """`refset_descriptors__<descriptor>`: each reference's copy descriptor."""
    return TableSpec(
        refset_descriptors_name(descriptor),
        schemas.refset_descriptors_schema(dim),
        ("refset", "ref_id"),
        f"copy descriptors ({descriptor}) of the references",
    )


def descriptors_name(descriptor: str) -> str:
    """The name of descriptor `descriptor`'s table of dataset-image descriptors."""
    return DESCRIPTORS_PREFIX + slug(descriptor)


def descriptors(descriptor: str, dim: int) -> TableSpec:
    """`descriptors__<descriptor>`: the copy descriptor of each audited dataset image, so that
    an audit against another reference set does not describe the images again."""
    return TableSpec(
        descriptors_name(descriptor),
        schemas.descriptors_schema(dim),
        ("id",),
        f"copy descriptors ({descriptor}) of the audited images",
    )


def by_name(name: str, schema: pa.Schema | None = None) -> TableSpec:
    """The spec of table `name`. A family table (``embeddings__*``, ``refset_descriptors__*``)
    takes its vector size from `schema` (an existing table's) when given."""
    if name in FIXED:
        return FIXED[name]
    if name.startswith(EMBEDDINGS_PREFIX) and len(name) > len(EMBEDDINGS_PREFIX):
        image_dim = _list_size(schema, "image_embedding")
        text_dim = _list_size(schema, "text_embedding")
        return embeddings(name.removeprefix(EMBEDDINGS_PREFIX), image_dim, text_dim)
    if name.startswith(REFSET_DESCRIPTORS_PREFIX) and len(name) > len(REFSET_DESCRIPTORS_PREFIX):
        dim = _list_size(schema, "descriptor") or 0
        return refset_descriptors(name.removeprefix(REFSET_DESCRIPTORS_PREFIX), dim)
    if name.startswith(DESCRIPTORS_PREFIX) and len(name) > len(DESCRIPTORS_PREFIX):
        dim = _list_size(schema, "descriptor") or 0
        return descriptors(name.removeprefix(DESCRIPTORS_PREFIX), dim)
    raise CatalogError(f"no catalog table is called {name!r}")


def _list_size(schema: pa.Schema | None, column: str) -> int | None:
    if schema is None or column not in schema.names:
        return None
    kind = schema.field(column).type
    return kind.list_size if pa.types.is_fixed_size_list(kind) else None
