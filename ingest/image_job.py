"""The image-job interface: one loop for every job that decodes images and runs models on them.

::

    units --reader--> records --decode (worker processes)--> batches of good images
          --stage (the models, on a device)--> named output arrays
          --job.collect--> the unit's rows --job.commit--> one atomic commit per unit (+ ledger)
    bad records --job.reject--> quarantine, counted: read = written + quarantined

A job (:class:`ImageJob`) is a small definition: which units (shards) still need work
(:meth:`ImageJob.plan`), what the decoder must make of each image (:class:`DecodePlan`), which
stage runs the models (:class:`StageSpec`), and how outputs become rows and commits.
:mod:`coyo_db.ingest.job_runner` owns the rest: the engine session, the `runs` row, progress,
timings and the summary. `ingest images`, `label`, `refset add` and `audit` are jobs.

Two engines drive the same job: ``local`` decodes in a spawn pool of worker processes and runs
the stage in this process (:mod:`coyo_db.ingest.local_engine`); ``ray`` reads and decodes in
Ray Data tasks and runs the stage in an actor pool, one GPU each where the cluster has GPUs
(:mod:`coyo_db.ingest.ray_engine`). Either way every unit is collected and committed in the
driver, by the job's own code: both engines write the same rows, and a killed job, run again,
finishes the rest with every row once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from coyo_db.catalog.summary import IngestSummary

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord, Preprocess
    from coyo_db.progress import Progress

READ_DECODE, INFER, WRITE = "read+decode", "infer", "write"


class Unit(Protocol):
    """A shard of work: what the reader reads, committed as a whole."""

    @property
    def name(self) -> str:
        """What the user knows the unit by (the shard's path)."""

    def records(self) -> Iterator[ImageRecord]:
        """The unit's images, in a stable order (a Ray task calls this: it must pickle)."""

    def count(self) -> int | None:
        """How many records :meth:`records` yields, if known without reading them."""


@dataclass(frozen=True)
class DecodePlan:
    """What the decode workers make of each record: one pixel array per spec, the pHash
    (``"exact"``, ``"fast"`` or False), a pixel cap, and whether the job needs the encoded
    bytes afterwards (``keep_bytes``: the audit verifies copies on them)."""

    specs: tuple[Preprocess, ...]
    phash: str | bool = False
    max_pixels: int | None = None
    keep_bytes: bool = False

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"phash": self.phash}
        if self.max_pixels is not None:
            options["max_pixels"] = self.max_pixels
        return options


class Stage(Protocol):
    """The models of a job on one device, called on a batch of good images.

    `pixels` holds an (N, H, W, 3) uint8 array per :class:`Preprocess` of the decode plan,
    `texts` the N captions (None where there is none). Returns named arrays whose first
    dimension is N: (N,) values or (N, d) vectors, numbers or strings."""

    def __call__(
        self, pixels: dict[Preprocess, np.ndarray], texts: list[str | None]
    ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class StageSpec:
    """How to build a job's stage: ``factory(**kwargs)`` (it loads the models from their
    specs), once per process that runs it: each Ray actor builds its own on its device. `key`
    tells stages apart: units whose stages share a key share one. `built` is a stage the job
    already holds (the local engine uses it instead of loading another copy; it never travels
    to Ray)."""

    factory: Callable[..., Stage]
    kwargs: dict[str, Any]
    key: str
    built: Any = field(default=None, compare=False, repr=False)

    def build(self) -> Stage:
        return self.built if self.built is not None else self.factory(**self.kwargs)


@dataclass
class UnitWork:
    """One unit a job planned: how to decode it, which stage, and the job's own state for it
    (what it gathers until the unit's commit)."""

    unit: Unit
    decode: DecodePlan
    stage: StageSpec
    state: Any = None


@dataclass
class JobSummary(IngestSummary):
    """The counts every image job reports (units are shards, rows are images) and where the
    time went."""

    INPUTS = "shards"

    timings: dict[str, float] = field(
        default_factory=lambda: {READ_DECODE: 0.0, INFER: 0.0, WRITE: 0.0}
    )

    def time_split(self) -> str:
        busy = sum(self.timings.values())
        if busy <= 0:
            return ""
        return "; time in " + ", ".join(f"{k} {v / busy:.0%}" for k, v in self.timings.items())

    def count_rejected(self, reasons: Sequence[str]) -> None:
        self.rows_quarantined += len(reasons)
        for reason in reasons:
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + 1


class ImageJob(ABC):
    """A job definition for :func:`run_image_job`."""

    #: the command, as `runs` records it ("ingest images", "label", ...)
    command: str = ""
    #: good images per stage call
    batch_size: int = 64

    def __init__(self, catalog: Catalog, summary: JobSummary, arguments: dict[str, Any]) -> None:
        self.catalog = catalog
        self.summary = summary
        self.arguments = arguments
        self.run_id = ""

    def prepare(self, engine: Engine) -> None:  # noqa: B027 - optional hook
        """Load models and open tables, knowing the engine (its device, local or Ray)."""

    @abstractmethod
    def plan(self) -> list[UnitWork]:
        """The units that still need work; count the others as skipped in the summary."""

    @abstractmethod
    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        """Good images of `work` and the stage's outputs for them (same order)."""

    @abstractmethod
    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        """Records of `work` that could not be read or decoded (reason: :func:`failure`)."""

    @abstractmethod
    def commit(self, work: UnitWork) -> None:
        """Write what `work` gathered: one atomic commit (and ledger entry) per table."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """After every unit: what the job writes once for the whole run."""

    def counts(self, work: UnitWork) -> bool:
        """Whether `work`'s images count in the summary's rows (read, quarantined)."""
        return True


def failure(decoded: DecodedImage) -> str | None:
    """Why a record could not be used (the reader's or the decoder's reason), or None."""
    return decoded.record.error or decoded.error


def caption(record: ImageRecord) -> str | None:
    """The record's caption (img2dataset's .txt, or "caption" in its .json), None if blank."""
    text = record.caption if record.caption is not None else record.meta.get("caption")
    return text if isinstance(text, str) and text.strip() else None


def stack_pixels(good: Sequence[DecodedImage], specs: Sequence[Preprocess]) -> dict:
    return {spec: np.stack([d.pixels[spec] for d in good]) for spec in specs}


def hand_good(job: ImageJob, work: UnitWork, good: list[DecodedImage], outputs: dict) -> None:
    """Good images and their outputs to the job (both engines call this)."""
    if good:
        if job.counts(work):
            job.summary.rows_read += len(good)
        job.collect(work, good, outputs)


def hand_bad(job: ImageJob, work: UnitWork, bad: list[DecodedImage]) -> None:
    """Records that failed to the job, counted by reason (both engines call this)."""
    if bad:
        if job.counts(work):
            job.summary.rows_read += len(bad)
            job.summary.count_rejected([failure(d) or "unknown" for d in bad])
        job.reject(work, bad)


def commit_unit(job: ImageJob, work: UnitWork) -> None:
    """The job's commit of one whole unit, timed and counted (both engines call this)."""
    started = time.perf_counter()
    job.commit(work)
    job.summary.timings[WRITE] = job.summary.timings.get(WRITE, 0.0) + (
        time.perf_counter() - started
    )
    job.summary.inputs_done += 1


class Engine(Protocol):
    """Drives a job's planned units through read, decode and stage."""

    name: str

    def device(self, requested: str) -> str:
        """The device the stage runs on (``auto`` resolved for this engine)."""

    def stage_resources(self, device: str) -> tuple[int, int, float]:
        """(stage instances, CPU threads each, GPUs each) for a stage on `device`."""

    def run(self, job: ImageJob, works: list[UnitWork], progress: Progress) -> None:
        """Every unit through the job: collect, reject, commit each, in the driver."""
