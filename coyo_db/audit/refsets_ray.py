"""`coyo-db refset add --engine ray`: the reference-set job's pieces for the Ray engine.

The same engine as ``ingest images --engine ray`` (:mod:`coyo_db.ingest.ray_engine`):

- :func:`read_shard` (CPU tasks): one shard of the reference folder read and decoded with the
  ingest decode code (exact pHash), as Arrow tables
  (:func:`coyo_db.ingest.images_ray.decoded_table`), with each image's low-information reason
  computed there, on the descriptor's pixels.
- :class:`DescribeStage` (actor pool, a GPU each when the cluster has GPUs): loads the copy
  descriptor once per actor and describes each image and its mirror image.
- :func:`run` (driver): hands the shards to :func:`ray_engine.map_shards` and adds each
  finished shard, in shard order, to the local engine's own rows
  (:class:`coyo_db.audit.refsets.RefsetRows`), so ref_ids, rows and the single write are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.audit.refsets import RefsetRows, describe_both, low_information
from coyo_db.ingest import images_ray, ray_engine
from coyo_db.ingest.decode import decode_batch
from coyo_db.ingest.image_types import ImageRecord, Preprocess
from coyo_db.progress import Progress

if TYPE_CHECKING:
    from coyo_db.ingest.image_sources import ImageShard
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

_COLUMNS = ["shard", "member", "error", "phash", "width", "height", "px0"]


def run(
    rows: RefsetRows,
    shards: list[ImageShard],
    model: CopyDescriptor,
    descriptor: str,
    device: str,
    address: str | None,
    *,
    batch_size: int,
    progress: Progress,
) -> None:
    """Describe `shards` on Ray (joining `address`, or a local instance) into `rows`.

    `model` gives the pixels to decode; the actors load their own copies of `descriptor`.
    Shards finish in any order; each is added once all those before it are in.
    """
    waiting: dict[int, pa.Table | None] = {}
    following = 0

    def on_shard(index: int, table: pa.Table | None) -> None:
        nonlocal following
        waiting[index] = table
        while following in waiting:
            _add_shard(rows, waiting.pop(following))
            following += 1

    with ray_engine.session(address):
        device = images_ray.cluster_device(device)
        actors, threads, gpus = images_ray.actor_layout(device)
        stage = ray_engine.ModelStage(
            DescribeStage,
            {"descriptor": descriptor, "device": device, "threads": threads},
            batch_size=batch_size,
            actors=actors,
            num_gpus=gpus,
            num_cpus=threads,
        )
        read = functools.partial(read_shard, spec=model.preprocess, chunk=batch_size)
        ray_engine.map_shards(shards, read, stage, on_shard, progress=progress)


def _add_shard(rows: RefsetRows, table: pa.Table | None) -> None:
    """One shard's rows as they came back from the actors: failures counted, the rest added."""
    if table is None:
        return
    errors = table["error"].to_pylist()
    records = [
        ImageRecord(shard=shard, member=member, key=member, data=None)
        for shard, member in zip(
            table["shard"].to_pylist(), table["member"].to_pylist(), strict=True
        )
    ]
    for record, error in zip(records, errors, strict=True):
        if error is not None:
            rows.fail(record, error)
    good = np.array([e is None for e in errors], dtype=bool)
    if not good.any():
        return
    kept = table.filter(pa.array(good))
    rows.add(
        [r for r, ok in zip(records, good, strict=True) if ok],
        kept["phash"].to_pylist(),
        kept["width"].to_pylist(),
        kept["height"].to_pylist(),
        kept["low_info_reason"].to_pylist(),
        images_ray._column_numpy(kept["descriptor"]),
        images_ray._column_numpy(kept["descriptor_flip"]),
    )


# ---- CPU tasks: read, decode, low-information flags ----------------------------------------


def read_shard(shard: ImageShard, *, spec: Preprocess, chunk: int) -> Iterator[pa.Table]:
    """The shard's images decoded `chunk` at a time, as Arrow, with ``low_info_reason``."""
    records = shard.records()
    while batch := list(islice(records, chunk)):
        decoded = decode_batch(batch, [spec])
        table = images_ray.decoded_table(decoded, [spec]).select(_COLUMNS)
        good = pc.is_null(table["error"]).to_numpy(zero_copy_only=False)
        pixels = images_ray._pixels(table["px0"], spec)
        reasons = [low_information(pixels[i]) if ok else None for i, ok in enumerate(good)]
        yield table.append_column("low_info_reason", pa.array(reasons, pa.string()))


# ---- actors: the copy descriptor -----------------------------------------------------------


class DescribeStage:
    """One descriptor actor: the copy descriptor on this actor's device, plain and mirrored."""

    def __init__(self, descriptor: str, device: str, threads: int = 1) -> None:
        from coyo_db.ingest.models.copy_descriptors import load_descriptor

        if not device.startswith("cuda"):
            import torch

            torch.set_num_threads(threads)
        self.model = load_descriptor(descriptor)
        self.model.to(device)

    def __call__(self, table: pa.Table) -> pa.Table:
        good = pc.is_null(table["error"]).to_numpy(zero_copy_only=False)
        n, dim = table.num_rows, self.model.dim
        plain = np.zeros((n, dim), np.float32)
        mirror = np.zeros((n, dim), np.float32)
        if good.any():
            pixels = images_ray._pixels(table["px0"], self.model.preprocess)[good]
            plain[good], mirror[good] = describe_both(self.model, pixels)
        return (
            table.drop_columns(["px0"])
            .append_column("descriptor", _fixed(plain))
            .append_column("descriptor_flip", _fixed(mirror))
        )


def _fixed(values: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
