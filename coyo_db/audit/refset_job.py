"""`coyo-db refset add`: a reference set registered through the image-job runner.

The units are the shards under the set's folder (:func:`find_shards`: folders searched recursively,
img2dataset ``.tar`` / ``.parquet`` shards, ``files`` folders), decoded with the ingest decode code
(the same exact pHash, the same pixels); the stage (:class:`DescribeStage`) gives each image its
copy descriptor and its low-information reason (one forward pass an image, as when a dataset image
is described: the descriptor is close to mirror-invariant, and verification matches mirror images,
see :mod:`coyo_db.audit.candidates`). Units finish in any order (on Ray); the set is assembled in
unit order, so ref_ids follow the shards and their members, and written once at the end, one commit
per table with the `refsets` row removed first and written last: an interrupted `refset add` (or
`--replace`) leaves the set unregistered, and run again registers the whole set.

:func:`describe_refset` runs the same stage over a set already registered (an audit with
another descriptor), reading its images back from where they were found.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from coyo_db.audit.refsets import (
    NAME_PATTERN,
    RefsetRows,
    RefsetSummary,
    detect_layout,
    load_refset,
    refset_names,
    write_descriptors,
)
from coyo_db.catalog import tables
from coyo_db.errors import InputError
from coyo_db.ingest.image_job import (
    DecodePlan,
    Engine,
    ImageJob,
    JobSummary,
    StageSpec,
    UnitWork,
    failure,
)
from coyo_db.ingest.job_runner import run_image_job
from coyo_db.ingest.stored_images import StoredShard, shards_of

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage, Preprocess
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor
    from coyo_db.progress import Progress

log = logging.getLogger(__name__)


class DescribeStage:
    """The copy descriptor on one device: each image's descriptor and (with `low_info`) why it
    carries too little to match safely."""

    def __init__(self, model: CopyDescriptor, low_info: bool = True) -> None:
        self.model, self.low_info = model, low_info

    @classmethod
    def load(
        cls,
        descriptor: str,
        device: str,
        threads: int = 0,
        low_info: bool = True,
    ) -> DescribeStage:
        """The descriptor from its spec, on `device` (each Ray actor loads its own)."""
        from coyo_db.ingest.models.common import cpu_threads
        from coyo_db.ingest.models.copy_descriptors import load_descriptor

        cpu_threads(device, threads)
        model = load_descriptor(descriptor)
        model.to(device)
        return cls(model, low_info)

    def __call__(
        self, pixels: dict[Preprocess, np.ndarray], texts: list[str | None]
    ) -> dict[str, np.ndarray]:
        from coyo_db.audit.low_info import low_information

        images = pixels[self.model.preprocess]
        out = {"descriptor": np.asarray(self.model.describe(images), np.float32)}
        if self.low_info:
            out["low_info_reason"] = np.array([low_information(i) for i in images], object)
        return out


def describe_stage(
    model: CopyDescriptor,
    spec: str,
    engine: Engine,
    device: str,
    low_info: bool,
) -> StageSpec:
    """The :class:`DescribeStage` of `model` for `engine` (the job's own copy when local)."""
    return StageSpec(
        DescribeStage.load,
        {
            "descriptor": spec,
            "device": device,
            "threads": engine.stage_resources(device)[1],
            "low_info": low_info,
        },
        key=f"{spec}:{low_info}",
        built=DescribeStage(model, low_info) if engine.name == "local" else None,
    )


@dataclass
class UnitRows:
    """One unit's good images and their stage outputs, in record order."""

    good: list[DecodedImage] = field(default_factory=list)
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)


def slim(decoded: DecodedImage) -> DecodedImage:
    """`decoded` without its encoded bytes and pixels: what a reference's row needs."""
    record = dataclasses.replace(decoded.record, data=None, meta={})
    return dataclasses.replace(decoded, record=record, pixels={})


def add_refset(
    catalog: Catalog,
    name: str,
    path: str | Path,
    *,
    descriptor: str = "effnet-lite0",
    replace: bool = False,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> RefsetSummary:
    """Register the images under `path` as reference set `name` (see :mod:`.refsets`).

    `engine` is "local" or "ray": Ray Data reads and decodes on the cluster's CPUs and runs
    the descriptor in GPU or CPU actors; both engines write the same rows. `address` joins a
    running Ray cluster; without it a local Ray instance starts.
    """
    from coyo_db.ingest.image_shards import find_shards

    if not NAME_PATTERN.match(name):
        raise InputError(f"refset name {name!r}: use letters, digits, '-', '_' or '.'")
    root = Path(path).expanduser().resolve()
    shards = find_shards([root])
    check_new(catalog, name, replace)
    head = list(islice((r for shard in shards for r in shard.records()), 256))
    layout = detect_layout([r.member for r in head if r.error is None])
    if layout == "folder" and all(s.kind in ("webdataset", "parquet") for s in shards):
        layout = "shards"
    arguments = {
        "refset": name,
        "path": str(root),
        "descriptor": descriptor,
        "replace": replace,
        "device": device,
    }
    job = RefsetJob(catalog, RefsetRows(name, root, layout), shards, descriptor, arguments)
    job.batch_size, job.requested_device, job.replace = batch_size, device, replace
    summary = run_image_job(job, engine=engine, address=address, workers=workers, progress=progress)
    assert isinstance(summary, RefsetSummary)
    return summary


def check_new(catalog: Catalog, name: str, replace: bool) -> bool:
    """Whether refset `name` exists; refused when it does and `replace` is false."""
    exists = name in refset_names(catalog)
    if exists and not replace:
        raise InputError(f"refset {name!r} exists; pass --replace to register it again")
    return exists


class RefsetJob(ImageJob):
    """`refset add` as a job definition: shards in, the set's rows written once."""

    command = "refset add"
    requested_device = "auto"
    replace = False
    exists = False

    def __init__(
        self,
        catalog: Catalog,
        rows: RefsetRows,
        shards: list[Any],
        descriptor: str,
        arguments: dict[str, Any],
    ) -> None:
        super().__init__(catalog, rows.summary, arguments)
        self.rows, self.shards, self.descriptor = rows, shards, descriptor

    def prepare(self, engine: Engine) -> None:
        from coyo_db.ingest.models.copy_descriptors import load_descriptor

        # again under the writer lock: a job that ran meanwhile may have added the set
        self.exists = check_new(self.catalog, self.rows.name, self.replace)
        self.model = load_descriptor(self.descriptor)
        device = engine.device(self.requested_device)
        if engine.name == "local":
            self.model.to(device)
        self.arguments["device"] = device
        self.stage = describe_stage(self.model, self.descriptor, engine, device, low_info=True)

    def plan(self) -> list[UnitWork]:
        decode = DecodePlan((self.model.preprocess,), phash="exact")
        self.works = [UnitWork(s, decode, self.stage, UnitRows()) for s in self.shards]
        return self.works

    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        # kept until the set is written: only what its rows need, not the image's bytes and
        # pixels (at 50,000 references those would be over 10 GB)
        work.state.good.extend(slim(d) for d in good)
        work.state.outputs.append(
            {"descriptor": outputs["descriptor"], "low_info_reason": outputs["low_info_reason"]}
        )

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        for decoded in bad:
            record = decoded.record
            log.warning(
                "refset %s: %s/%s: %s",
                self.rows.name,
                record.shard,
                record.member,
                failure(decoded),
            )

    def commit(self, work: UnitWork) -> None:
        pass  # the set is written once, by finish, in shard order

    def finish(self) -> None:
        """The set's rows in shard order (units finish in any order on Ray), written once."""
        for work in self.works:
            state: UnitRows = work.state
            if not state.good:
                continue
            outputs = {k: np.concatenate([o[k] for o in state.outputs]) for k in state.outputs[0]}
            self.rows.add(
                [d.record for d in state.good],
                [d.phash for d in state.good],
                [d.width for d in state.good],
                [d.height for d in state.good],
                list(outputs["low_info_reason"]),
                outputs["descriptor"],
            )
        self.rows.commit(self.catalog, self.model, exists=self.exists, run_id=self.run_id)


def describe_refset(
    catalog: Catalog,
    name: str,
    descriptor: CopyDescriptor,
    *,
    batch_size: int = 64,
    workers: int | None = None,
) -> np.ndarray:
    """Compute and store `descriptor` for a registered set (an audit with another model);
    returns the (N, D) float32 descriptors in ref_id order."""
    images, _ = load_refset(catalog, name, descriptor.name)
    job = DescribeJob(
        catalog, name, images, descriptor, {"refset": name, "descriptor": descriptor.name}
    )
    job.batch_size = batch_size
    run_image_job(job, workers=workers)
    return job.vectors


class DescribeJob(ImageJob):
    """A registered set's images read back and described with another descriptor."""

    command = "refset describe"

    def __init__(
        self,
        catalog: Catalog,
        name: str,
        images: pa.Table,
        model: CopyDescriptor,
        arguments: dict[str, Any],
    ) -> None:
        super().__init__(
            catalog, JobSummary(table=tables.refset_descriptors_name(model.name)), arguments
        )
        self.name, self.images, self.model = name, images, model
        n, dim = len(images), model.dim
        self.vectors = np.zeros((n, dim), np.float32)

    def prepare(self, engine: Engine) -> None:
        device = getattr(self.model, "device", "cpu")
        self.stage = describe_stage(self.model, self.model.name, engine, device, low_info=False)

    def plan(self) -> list[UnitWork]:
        located = self.images.select(["ref_id", "shard", "member"]).rename_columns(
            ["id", "shard", "member"]
        )
        decode = DecodePlan((self.model.preprocess,), phash=False)
        return [
            UnitWork(
                StoredShard(path, ids, [str(m) for m in members], len(ids)), decode, self.stage
            )
            for path, ids, members, _ in shards_of(located)
        ]

    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        rows = work.unit.ids_of([d.record for d in good])  # ref_ids are positions: 0..N-1
        self.vectors[rows] = outputs["descriptor"]

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        for decoded in bad:
            log.warning(
                "refset %s: %s/%s: %s",
                self.name,
                decoded.record.shard,
                decoded.record.member,
                failure(decoded),
            )

    def commit(self, work: UnitWork) -> None:
        pass

    def finish(self) -> None:
        write_descriptors(self.catalog, self.name, self.model, self.images["ref_id"], self.vectors)
        self.summary.rows_written = len(self.vectors)
