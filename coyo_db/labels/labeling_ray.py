"""`coyo-db label --engine ray`: the labeling job's pieces for the Ray engine.

The same engine as ``ingest images --engine ray`` (:mod:`coyo_db.ingest.ray_engine`):

- :func:`read_shard` (CPU tasks): one shard of `images` read back with :func:`fetch_images`
  and decoded, as Arrow tables (:func:`coyo_db.ingest.images_ray.decoded_table`); ``key`` is
  the image's position in the shard's list of ids to label.
- :class:`LabelStage` (actor pool, a GPU each when the cluster has GPUs): loads the labeler
  once per actor and turns each table into top-k columns, one row per input row (null for the
  images that could not be read or decoded).
- :func:`run` (driver): hands the pending shards to :func:`ray_engine.map_shards` and commits
  each finished shard with the local engine's own commit:
  the same `labels` rows, quarantine and ledger entries, so resume works alike.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.ingest import images_ray, ray_engine
from coyo_db.ingest.decode import decode_batch
from coyo_db.ingest.image_types import Preprocess
from coyo_db.labels.labeling import labels_batch

if TYPE_CHECKING:
    from coyo_db.labels.labeling import _Job, _Shard

session = ray_engine.session
cluster_device = images_ray.cluster_device

_LABELS_TYPE = pa.list_(pa.int32())
_PROBS_TYPE = pa.list_(pa.float32())


def run(job: _Job, shards: list[_Shard], device: str, labeler_kwargs: dict[str, Any]) -> None:
    """Label `shards` on Ray; each one committed by the driver as soon as it is whole.

    `labeler_kwargs`: what :func:`load_labeler` needs to build the labeler in each actor.
    """
    actors, threads, gpus = images_ray.actor_layout(device)
    spec = job.labeler.preprocess
    stage = ray_engine.ModelStage(
        LabelStage,
        {**labeler_kwargs, "top_k": job.top_k, "device": device, "threads": threads},
        batch_size=job.batch_size,
        actors=actors,
        num_gpus=gpus,
        num_cpus=threads,
    )
    read = functools.partial(read_shard, spec=spec, chunk=job.batch_size)
    started = time.perf_counter()
    job.summary.timings = {"ray (read, decode, infer)": 0.0, "write": 0.0}

    def commit(index: int, table: pa.Table | None) -> None:
        shard = shards[index]
        job.commit(shard, *_shard_rows(job, shard, table))

    ray_engine.map_shards(shards, read, stage, commit, progress=job.progress)
    elapsed = time.perf_counter() - started
    job.summary.timings["ray (read, decode, infer)"] = elapsed - job.summary.timings["write"]


def _shard_rows(
    job: _Job, shard: _Shard, table: pa.Table | None
) -> tuple[list[pa.RecordBatch], np.ndarray, list[str]]:
    """The actors' rows of one shard as `labels` rows, the bad ids and their reasons."""
    if table is None:
        return [], np.zeros(0, np.int64), []
    positions = pc.cast(table["key"], pa.int64()).to_numpy()
    ids = shard.ids[positions]
    good = pc.is_valid(table["labels"]).to_numpy(zero_copy_only=False)
    batches = []
    if good.any():
        kept = table.filter(pa.array(good))
        n = kept.num_rows
        indices = pc.list_flatten(kept["labels"]).to_numpy().reshape(n, -1)
        probs = pc.list_flatten(kept["label_probs"]).to_numpy().reshape(n, -1)
        batches.append(labels_batch(ids[good], indices, probs, job.taxonomy, job.labeler.name))
    bad_reasons = [r for r, ok in zip(table["error"].to_pylist(), good, strict=True) if not ok]
    return batches, ids[~good], bad_reasons


# ---- CPU tasks: read back and decode -------------------------------------------------------


def read_shard(shard: _Shard, *, spec: Preprocess, chunk: int) -> Iterator[pa.Table]:
    """The shard's images read back and decoded `chunk` at a time, as Arrow."""
    from coyo_db.ingest.image_fetch import fetch_images
    from coyo_db.labels.labeling import chunk_records

    fetched = fetch_images((shard.path, member) for member in shard.members)
    for records in chunk_records(fetched, chunk):
        decoded = decode_batch(records, [spec], phash=False)
        yield images_ray.decoded_table(decoded, [spec]).select(["key", "error", "px0"])


# ---- actors: the labeler -------------------------------------------------------------------


class LabelStage:
    """One labeling actor: the labeler on this actor's device, top-k per image."""

    def __init__(
        self,
        model: str,
        taxonomy_name: str,
        taxonomy: pa.Table,
        classes: str | None,
        templates: str | None,
        activation: str,
        class_embeddings: np.ndarray | None,
        top_k: int,
        device: str,
        threads: int = 1,
    ) -> None:
        from coyo_db.ingest.models.classifiers import load_labeler

        if not device.startswith("cuda"):
            import torch

            torch.set_num_threads(threads)
        self.labeler = load_labeler(
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
            self.labeler._classes = class_embeddings  # type: ignore[attr-defined]
        self.labeler.to(device)
        self.top_k = top_k

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        good = pc.is_null(table["error"]).to_numpy(zero_copy_only=False)
        labels = pa.nulls(n, _LABELS_TYPE)
        probs = pa.nulls(n, _PROBS_TYPE)
        if good.any():
            spec = self.labeler.preprocess
            pixels = images_ray._pixels(table["px0"], spec)[good]
            indices, values = self.labeler.top_k(pixels, self.top_k)
            labels = _lists(indices, good, _LABELS_TYPE)
            probs = _lists(values, good, _PROBS_TYPE)
        return pa.table(
            {"key": table["key"], "error": table["error"], "labels": labels, "label_probs": probs}
        )


def _lists(values: np.ndarray, good: np.ndarray, kind: pa.DataType) -> pa.Array:
    """(G, k) values of the good rows as a list column over all rows, null for the bad ones."""
    k = values.shape[1]
    lengths = np.where(good, k, 0).astype(np.int32)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    flat = pa.array(np.ascontiguousarray(values).ravel(), kind.value_type)
    mask = pa.array(~good)
    return pa.ListArray.from_arrays(offsets, flat, mask=mask)
