"""`coyo-db ingest images --engine ray`: the image job's pieces for the Ray engine.

- :func:`read_shard` (CPU tasks): a shard's records decoded by :func:`decode_batch`, as Arrow
  tables; pixels travel as fixed-size binary columns (uint8, one per model input size).
- :class:`ModelStage` (actor pool, a GPU each when the cluster has GPUs): loads the models and
  scorers once per actor and runs :func:`coyo_db.ingest.images.run_models`, the same function
  the local engine runs.
- :func:`run` (driver): plans each shard with the job's ledgers, hands the pending ones to
  :func:`coyo_db.ingest.ray_engine.map_shards`, and commits each finished shard with the job's
  own ``collect`` and ``finish``: the same ids, rows, quarantine and ledger entries as the local
  engine.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.errors import InputError
from coyo_db.ingest import ray_engine
from coyo_db.ingest.decode import decode_batch
from coyo_db.ingest.image_types import DecodedImage, ImageRecord, Preprocess
from coyo_db.ingest.images import (
    ShardPlan,
    ShardResult,
    _caption,
    _chunked,
    run_models,
)

if TYPE_CHECKING:
    from coyo_db.ingest.image_sources import ImageShard
    from coyo_db.ingest.images import _Job

log = logging.getLogger(__name__)

session = ray_engine.session
_OUTPUT_PREFIXES = ("image:", "text:", "score:")


def cluster_device(device: str) -> str:
    """``auto`` -> ``cuda`` when the cluster has GPUs, else ``cpu``; a CUDA device needs GPUs."""
    gpus = ray_engine.cluster_resources().get("GPU", 0)
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise InputError(f"device {device!r}: the Ray cluster has no GPUs")
    return device


def actor_layout(device: str) -> tuple[int, int, float]:
    """(actors, CPUs per actor, GPUs per actor) for the model stage on this cluster.

    GPUs: one actor per GPU. CPUs only: half the CPUs run models (actors of up to 8 threads),
    half decode, which is where a CPU-only ingest spends its time.
    """
    resources = ray_engine.cluster_resources()
    if device.startswith("cuda"):
        return max(1, int(resources.get("GPU", 0))), 1, 1.0
    cpus = max(1, int(resources.get("CPU", 1)))
    threads = min(8, max(1, cpus // 4))
    return max(1, cpus // (2 * threads)), threads, 0.0


# ---- driver --------------------------------------------------------------------------------


def run(job: _Job, shards: list[ImageShard], device: str) -> None:
    """Plan, run on Ray and commit shard by shard; shards needing the same outputs go together."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[ImageShard, ShardPlan]]] = {}
    for shard in shards:
        plan = job.plan(shard)
        if plan is not None:
            key = (tuple(m.spec for m in plan.models), tuple(s.spec for s in plan.scorers))
            groups.setdefault(key, []).append((shard, plan))
    actors, threads, gpus = actor_layout(device)
    started = time.perf_counter()
    job.summary.timings = {"ray (read, decode, models)": 0.0, "write": 0.0}
    for (models, scorers), planned in groups.items():
        specs = planned[0][1].specs
        stage = ray_engine.ModelStage(
            ModelStage,
            {
                "embed": list(models),
                "scores": list(scorers),
                "device": device,
                "specs": specs,
                "threads": threads,
            },
            batch_size=job.batch_size,
            actors=actors,
            num_gpus=gpus,
            num_cpus=threads,
        )
        read = functools.partial(
            read_shard, specs=specs, decode_options=job.decode_options, chunk=job.batch_size
        )

        def commit(index: int, table: pa.Table | None, planned=planned) -> None:
            shard, plan = planned[index]
            job.finish(shard, plan, _shard_result(job, plan, table))

        ray_engine.map_shards(
            [shard for shard, _ in planned], read, stage, commit, progress=job.progress
        )
    elapsed = time.perf_counter() - started
    job.summary.timings["ray (read, decode, models)"] = elapsed - job.summary.timings["write"]


def _shard_result(job: _Job, plan: ShardPlan, table: pa.Table | None) -> ShardResult:
    """One shard's rows, as they came back from the actors, turned into the job's result."""
    result = ShardResult()
    if table is None:
        return result
    result.read = table.num_rows
    errors = table["error"].to_pylist()
    good = np.array([e is None for e in errors])
    records = _records(table)
    result.bad = [(r, e) for r, e in zip(records, errors, strict=True) if e is not None]
    if not good.any():
        return result
    facts = table.select(["width", "height", "format", "nbytes", "phash"]).to_pylist()
    decoded = [
        DecodedImage(
            record=record,
            width=row["width"],
            height=row["height"],
            format=row["format"],
            nbytes=row["nbytes"],
            phash=row["phash"],
        )
        for record, row, ok in zip(records, facts, good, strict=True)
        if ok
    ]
    outputs = {
        name: _column_numpy(table[name])[good]
        for name in table.column_names
        if name.startswith(_OUTPUT_PREFIXES)
    }
    job.collect(decoded, outputs, plan, result)
    return result


def _records(table: pa.Table) -> list[ImageRecord]:
    columns = table.select(["shard", "member", "key", "url", "caption", "meta"]).to_pydict()
    return [
        ImageRecord(
            shard=shard,
            member=member,
            key=key,
            data=None,
            url=url,
            caption=caption,
            meta=json.loads(meta) if meta else {},
        )
        for shard, member, key, url, caption, meta in zip(*columns.values(), strict=True)
    ]


# ---- CPU tasks: read and decode ------------------------------------------------------------


def read_shard(
    shard: ImageShard, *, specs: list[Preprocess], decode_options: dict[str, Any], chunk: int
) -> Iterator[pa.Table]:
    """A shard's records decoded `chunk` at a time, as Arrow (see :func:`decoded_table`)."""
    for records in _chunked(shard.records(), chunk):
        yield decoded_table(decode_batch(records, specs, **decode_options), specs)


def decoded_table(decoded: list[DecodedImage], specs: list[Preprocess]) -> pa.Table:
    """Decoded images as Arrow: record fields, decode facts, ``error`` (null when good),
    ``text`` (the caption models read) and one ``px<i>`` column per spec."""
    records = [d.record for d in decoded]
    errors = [d.record.error or d.error for d in decoded]
    columns: dict[str, pa.Array] = {
        "shard": pa.array([r.shard for r in records], pa.string()),
        "member": pa.array([r.member for r in records], pa.string()),
        "key": pa.array([r.key for r in records], pa.string()),
        "url": pa.array([r.url for r in records], pa.string()),
        "caption": pa.array([r.caption for r in records], pa.string()),
        "meta": pa.array(
            [json.dumps(r.meta, ensure_ascii=False, default=str) for r in records], pa.string()
        ),
        "text": pa.array([_caption(r) for r in records], pa.string()),
        "error": pa.array(errors, pa.string()),
        "width": pa.array([d.width for d in decoded], pa.int32()),
        "height": pa.array([d.height for d in decoded], pa.int32()),
        "format": pa.array([d.format for d in decoded], pa.string()),
        "nbytes": pa.array([d.nbytes for d in decoded], pa.int64()),
        "phash": pa.array([d.phash for d in decoded], pa.string()),
    }
    for i, spec in enumerate(specs):
        pixels = np.zeros((len(decoded), spec.size, spec.size, 3), np.uint8)
        for row, item in enumerate(decoded):
            if errors[row] is None:
                pixels[row] = item.pixels[spec]
        width = spec.size * spec.size * 3
        columns[f"px{i}"] = pa.Array.from_buffers(
            pa.binary(width), len(decoded), [None, pa.py_buffer(pixels)]
        )
    return pa.table(columns)


def _pixels(column: pa.ChunkedArray, spec: Preprocess) -> np.ndarray:
    array = column.combine_chunks()
    width = spec.size * spec.size * 3
    flat = np.frombuffer(
        array.buffers()[1], np.uint8, count=len(array) * width, offset=array.offset * width
    )
    return flat.reshape(len(array), spec.size, spec.size, 3)


# ---- actors: the models --------------------------------------------------------------------


class ModelStage:
    """One model actor: the job's models and scorers on this actor's device."""

    def __init__(
        self,
        embed: list[str],
        scores: list[str],
        device: str,
        specs: list[Preprocess],
        threads: int = 1,
    ) -> None:
        from coyo_db.ingest.image_outputs import ScorerOutput, model_output
        from coyo_db.ingest.registry import load_model, load_scorer

        if not device.startswith("cuda") and (embed or scores):
            try:
                import torch

                torch.set_num_threads(threads)
            except ModuleNotFoundError:  # scorers alone need no torch
                pass
        self.scorers = [ScorerOutput(spec, load_scorer(spec)) for spec in scores]
        self.models = [model_output(spec, load_model(spec)) for spec in embed]
        for output in self.models:
            output.model.to(device)
        self.specs = specs

    def __call__(self, table: pa.Table) -> pa.Table:
        good = pc.is_null(table["error"]).to_numpy(zero_copy_only=False)
        pixels = {spec: _pixels(table[f"px{i}"], spec)[good] for i, spec in enumerate(self.specs)}
        texts = table["text"].to_pylist()
        captions = [text for text, ok in zip(texts, good, strict=True) if ok]
        outputs = run_models(self.models, self.scorers, pixels, captions) if good.any() else {}
        out = table.drop_columns([f"px{i}" for i in range(len(self.specs))])
        for name, values in outputs.items():
            out = out.append_column(name, _scatter(values, good))
        return out


def _scatter(values: np.ndarray, good: np.ndarray) -> pa.Array:
    """Values of the good rows spread over all rows (nulls / zeros for the bad ones)."""
    n = len(good)
    if values.ndim == 2:
        full = np.zeros((n, values.shape[1]), np.float32)
        full[good] = values
        return pa.FixedSizeListArray.from_arrays(pa.array(full.ravel()), values.shape[1])
    if values.dtype.kind in "OUS":
        full = np.full(n, None, object)
        full[good] = values
        return pa.array(full.tolist(), pa.string())
    full = np.zeros(n, values.dtype)
    full[good] = values
    return pa.array(full)


def _column_numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy().reshape(len(array), array.type.list_size)
    return array.to_numpy(zero_copy_only=False)
