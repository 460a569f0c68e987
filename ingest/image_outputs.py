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

from coyo_db.catalog import schemas
from coyo_db.catalog.ledger import SourceLedger
from coyo_db.ingest.image_types import EmbeddingScorer, ImageEmbedder, TextEmbedder
from coyo_db.ingest.registry import table_slug

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

IMAGES = "images"
SCORES = "scores"


def embeddings_table(model_name: str) -> str:
    return f"embeddings__{table_slug(model_name)}"


@dataclass
class ModelOutput:
    """An embedding model and the table its vectors go to."""

    spec: str
    model: Any
    table: str
    schema: pa.Schema
    ledger: SourceLedger | None = None

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
    ledger: SourceLedger | None = None
    table: str = SCORES
    schema: pa.Schema = field(default_factory=lambda: schemas.SCORES)

    def fingerprint(self, shard_fingerprint: str) -> str:
        return f"{shard_fingerprint}:{self.spec}"


def model_output(spec: str, model: Any) -> ModelOutput:
    image_dim = model.dim if isinstance(model, ImageEmbedder) else None
    text_dim = model.dim if isinstance(model, TextEmbedder) else None
    schema = schemas.embeddings_schema(image_dim, text_dim)
    return ModelOutput(spec, model, embeddings_table(spec), schema)


def attach_ledgers(catalog: Catalog, outputs: list[ModelOutput | ScorerOutput]) -> None:
    """Create the tables if needed and give every output its table's ledger."""
    ledgers: dict[str, SourceLedger] = {}
    for output in outputs:
        catalog.ensure_table(output.table, output.schema)
        if output.table not in ledgers:
            ledgers[output.table] = SourceLedger(catalog, output.table)
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
                schema=schemas.SCORES,
            )
        )
    return pa.concat_tables(parts) if parts else schemas.SCORES.empty_table()
