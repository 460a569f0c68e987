"""The stage of `coyo-db label`: a labeler on one device, top-k classes per image.

:class:`LabelStage` turns a batch of decoded pixels into ``labels`` (N, k) int32 class indices
and ``label_probs`` (N, k) float32, best first; :func:`labels_batch` makes them `labels` rows
(id, taxonomy, model = the model spec, labels, label_probs), COYO-Labeled-300M's format.
:func:`label_batch` labels encoded images in this process, with the job's own decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables

if TYPE_CHECKING:
    from coyo_db.ingest.image_types import Preprocess
    from coyo_db.ingest.models.classifiers import Labeler


class LabelStage:
    """A labeler on its device, top-k classes per image."""

    def __init__(self, labeler: Labeler, top_k: int) -> None:
        self.labeler, self.top_k = labeler, top_k

    @classmethod
    def load(
        cls,
        model: str,
        taxonomy_name: str,
        taxonomy: pa.Table,
        classes: str | None,
        templates: str | None,
        activation: str,
        class_embeddings: np.ndarray | None,
        top_k: int,
        device: str,
        threads: int = 0,
    ) -> LabelStage:
        """The labeler from its spec, on `device` (each Ray actor loads its own)."""
        from coyo_db.ingest.models.classifiers import load_labeler
        from coyo_db.ingest.models.common import cpu_threads

        cpu_threads(device, threads)
        labeler = load_labeler(
            model,
            taxonomy_name,
            taxonomy,
            classes=classes,
            templates=templates,
            activation=activation,  # type: ignore[arg-type]
        )
        if class_embeddings is not None:
            # Zero-shot: the driver's class embeddings (its cache is not on every node, and
            # the same vectors everywhere keep the rows equal to the local engine's).
            labeler.use_class_embeddings(class_embeddings)  # type: ignore[attr-defined]
        labeler.to(device)
        return cls(labeler, top_k)

    def __call__(
        self, pixels: dict[Preprocess, np.ndarray], texts: list[str | None]
    ) -> dict[str, np.ndarray]:
        indices, probs = self.labeler.top_k(pixels[self.labeler.preprocess], self.top_k)
        return {
            "labels": np.asarray(indices, np.int32),
            "label_probs": np.asarray(probs, np.float32),
        }


def labels_batch(
    ids: np.ndarray, indices: np.ndarray, probs: np.ndarray, taxonomy: str, model: str
) -> pa.RecordBatch:
    """(N,) ids and (N, k) indices / probabilities as `labels` rows."""
    n, k = indices.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(ids, np.int64)),
            pa.repeat(pa.scalar(taxonomy, pa.string()), n),
            pa.repeat(pa.scalar(model, pa.string()), n),
            pa.ListArray.from_arrays(offsets, pa.array(indices.astype(np.int32).ravel())),
            pa.ListArray.from_arrays(offsets, pa.array(probs.astype(np.float32).ravel())),
        ],
        schema=tables.LABELS.schema,
    )


@dataclass
class LabeledBatch:
    """What one batch gave: `labels` rows and the images that could not be labeled."""

    labels: pa.RecordBatch
    bad_ids: np.ndarray  # int64
    bad_reasons: list[str]


def label_batch(
    labeler: Labeler,
    ids: np.ndarray,
    images: Sequence[bytes | None],
    *,
    top_k: int,
    taxonomy: str,
    errors: Sequence[str | None] | None = None,
    max_pixels: int | None = None,
) -> LabeledBatch:
    """Decode encoded images in this process and label them (`ids[i]` is `images[i]`'s id).

    `errors[i]`, when given, is why image i could not be read (its bytes are then None)."""
    from coyo_db.ingest.decode import DEFAULT_MAX_PIXELS, decode_batch
    from coyo_db.ingest.image_job import failure
    from coyo_db.ingest.image_types import ImageRecord

    ids = np.asarray(ids, np.int64)
    records = [
        ImageRecord("", "", str(i), data, error=errors[i] if errors else None)
        for i, data in enumerate(images)
    ]
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    spec = labeler.preprocess
    decoded = decode_batch(records, [spec], phash=False, max_pixels=limit)
    reasons = [failure(d) for d in decoded]
    good = np.array([r is None for r in reasons], dtype=bool)
    if good.any():
        pixels = np.stack([d.pixels[spec] for d, ok in zip(decoded, good, strict=True) if ok])
        out = LabelStage(labeler, top_k)({spec: pixels}, [])
        rows = labels_batch(ids[good], out["labels"], out["label_probs"], taxonomy, labeler.name)
    else:
        rows = pa.RecordBatch.from_pylist([], schema=tables.LABELS.schema)
    bad: list[Any] = [r for r in reasons if r is not None]
    return LabeledBatch(rows, ids[~good], bad)
