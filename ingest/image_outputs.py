"""What one image ingest writes, table by table, and which shards each table still lacks.

Every output of a shard is its own atomic Lance commit, recorded in the ledger of its table:
`images` (with the shard's bad records in `quarantine`), one `embeddings__<model>` table per
model, and the long `scores` table, where each scorer is ledgered on its own (fingerprint
``<shard>:<scorer>``). A rerun computes only what some table lacks, so adding `--embed` or
`--scores` later costs one pass over the images for the new outputs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.ledger import Ledger
from coyo_db.ingest.image_types import EmbeddingScorer, ImageEmbedder, TextEmbedder

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage


@dataclass
class ModelOutput:
    """An embedding model and the table its vectors go to."""

    spec: str
    model: Any
    table: str
    schema: pa.Schema
    ledger: Ledger | None = None

    @property
    def images(self) -> bool:
        return isinstance(self.model, ImageEmbedder)

    @property
    def texts(self) -> bool:
        return isinstance(self.model, TextEmbedder)

    def fingerprint(self, shard_fingerprint: str) -> str:
        return shard_fingerprint


@dataclass
class ScorerOutput:
    """A scorer; its rows go to `scores`, ledgered per (shard, scorer)."""

    spec: str
    scorer: Any
    ledger: Ledger | None = None
    table: str = tables.SCORES.name
    schema: pa.Schema = field(default_factory=lambda: tables.SCORES.schema)

    def fingerprint(self, shard_fingerprint: str) -> str:
        return f"{shard_fingerprint}:{self.spec}"


def model_output(spec: str, model: Any) -> ModelOutput:
    image_dim = model.dim if isinstance(model, ImageEmbedder) else None
    text_dim = model.dim if isinstance(model, TextEmbedder) else None
    spec_table = tables.embeddings(spec, image_dim, text_dim)
    return ModelOutput(spec, model, spec_table.name, spec_table.schema)


def attach_ledgers(catalog: Catalog, outputs: list[ModelOutput | ScorerOutput]) -> None:
    """Create the tables if needed and give every output its table's ledger."""
    ledgers: dict[str, Ledger] = {}
    for output in outputs:
        catalog.ensure_table(output.table, output.schema)
        if output.table not in ledgers:
            ledgers[output.table] = Ledger(catalog, output.table)
        output.ledger = ledgers[output.table]


def embedding_scorer_models(scorers: list[ScorerOutput]) -> list[str]:
    """The embedding models that heads over embeddings need."""
    return [s.scorer.embedder for s in scorers if isinstance(s.scorer, EmbeddingScorer)]


def score_rows(ids: np.ndarray, spec: str, columns: dict[str, np.ndarray]) -> pa.Table:
    """Long-form `scores` rows: one per (id, score column)."""
    parts = []
    for name, values in columns.items():
        values = np.asarray(values)
        n = len(values)
        if values.dtype.kind in "OUS":  # text results (a language code)
            value = pa.nulls(n, pa.float32())
            label = pa.array(values.tolist(), pa.string())
        else:
            # NaN means "no value" (e.g. no caption to detect a language in): store NULL.
            value = pa.array(values.astype(np.float32), pa.float32(), from_pandas=True)
            label = pa.nulls(n, pa.string())
        parts.append(
            pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    "score": pa.array([name] * n, pa.string()),
                    "value": value,
                    "label": label,
                    "scorer": pa.array([spec] * n, pa.string()),
                },
                schema=tables.SCORES.schema,
            )
        )
    return pa.concat_tables(parts) if parts else tables.SCORES.empty()


def vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, d) vectors as a float16 fixed-size-list column."""
    flat = np.ascontiguousarray(values, dtype=np.float16).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), values.shape[1])


def images_batch(
    decoded: list[DecodedImage], ids: np.ndarray, origins: list[str]
) -> pa.RecordBatch:
    """`images` rows for decoded good images, their ids and the id origin of each."""
    from coyo_db.ingest.image_job import caption
    from coyo_db.ingest.phash import phash_hex_to_uint64

    phashes = [d.phash for d in decoded]
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array(ids, pa.int64()),
            "id_origin": pa.array(origins, pa.string()),
            "key": pa.array([d.record.key for d in decoded], pa.string()),
            "url": pa.array([d.record.url for d in decoded], pa.string()),
            "caption": pa.array([caption(d.record) for d in decoded], pa.string()),
            "shard": pa.array([d.record.shard for d in decoded], pa.string()),
            "member": pa.array([d.record.member for d in decoded], pa.string()),
            "image_phash": pa.array(phashes, pa.string()),
            "phash": pa.array(phash_hex_to_uint64(phashes), pa.uint64()),
            "bytes": pa.array([d.nbytes for d in decoded], pa.int64()),
            "width": pa.array([d.width for d in decoded], pa.int32()),
            "height": pa.array([d.height for d in decoded], pa.int32()),
            "format": pa.array([d.format for d in decoded], pa.string()),
            "data_offset": pa.array([d.record.data_offset for d in decoded], pa.int64()),
        },
        schema=tables.IMAGES.schema,
    )
