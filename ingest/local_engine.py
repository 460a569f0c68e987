"""The local engine of the image-job runner: decode worker processes, the stage in this process.

Per unit: the reader's records go to the decode pool in chunks, a few chunks in flight per
worker so that every worker stays busy; decoded images come back in order, the failed ones go
to the job at once, the good ones are gathered into batches of the job's `batch_size` for the
stage (the models, on this process's device), then handed to the job with the stage's outputs.
When the unit's records are exhausted, the job commits it. This is the one decode loop of
coyo-db: ingest, labeling, reference sets and audits all run through it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING

from coyo_db.ingest.decode import decode_batch
from coyo_db.ingest.decode_pool import decode_workers, decoder_pool
from coyo_db.ingest.image_job import (
    INFER,
    READ_DECODE,
    ImageJob,
    Stage,
    UnitWork,
    caption,
    commit_unit,
    failure,
    hand_bad,
    hand_good,
    stack_pixels,
)
from coyo_db.ingest.models.common import resolve_device

if TYPE_CHECKING:
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord
    from coyo_db.progress import Progress

CHUNK = 16  # records per decode task: big enough to amortise the process hop


class LocalEngine:
    """Decode in `workers` spawned processes (default one per core; 0 decodes in this
    process), run the stage here."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = decode_workers(workers)

    def device(self, requested: str) -> str:
        return resolve_device(requested)

    def stage_resources(self, device: str) -> tuple[int, int, float]:
        return 1, 0, 0.0

    def run(self, job: ImageJob, works: list[UnitWork], progress: Progress) -> None:
        stages: dict[str, Stage] = {}
        with decoder_pool(self.workers if works else 0) as pool:
            for work in works:
                if work.stage.key not in stages:
                    stages[work.stage.key] = work.stage.build()
                self._unit(job, work, stages[work.stage.key], pool, progress)

    def _unit(
        self, job: ImageJob, work: UnitWork, stage: Stage, pool: Executor, progress: Progress
    ) -> None:
        timings = job.summary.timings
        specs = work.decode.specs
        for good, bad in decoded_batches(
            work.unit.records(), work, pool, self.workers, job.batch_size, timings, progress
        ):
            hand_bad(job, work, bad)
            if not good:
                continue
            started = time.perf_counter()
            outputs = stage(stack_pixels(good, specs), [caption(d.record) for d in good])
            timings[INFER] = timings.get(INFER, 0.0) + time.perf_counter() - started
            hand_good(job, work, good, outputs)
        commit_unit(job, work)


def chunked(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def decoded_batches(
    records: Iterable[ImageRecord],
    work: UnitWork,
    pool: Executor,
    workers: int,
    batch_size: int,
    timings: dict[str, float],
    progress: Progress,
) -> Iterator[tuple[list[DecodedImage], list[DecodedImage]]]:
    """(good, bad) decoded images in record order: good ones `batch_size` at a time, bad ones
    as soon as they come back."""
    plan = work.decode
    options = plan.options()
    in_flight: deque[tuple[Future, list[ImageRecord]]] = deque()
    depth = 2 * max(workers, 1)  # chunks in flight: every worker busy, one more each
    chunks = chunked(records, CHUNK)
    ready: list[DecodedImage] = []
    started = time.perf_counter()
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < depth:
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
                break
            in_flight.append((pool.submit(decode_batch, chunk, plan.specs, **options), chunk))
        if not in_flight:
            break
        future, chunk = in_flight.popleft()
        bad = []
        for decoded, record in zip(future.result(), chunk, strict=True):
            if plan.keep_bytes:  # the workers send pixels back, not the encoded bytes
                decoded.record = replace(decoded.record, data=record.data)
            (bad if failure(decoded) is not None else ready).append(decoded)
        progress.advance(len(chunk))
        if bad:
            yield [], bad
        while len(ready) >= batch_size:
            batch, ready = ready[:batch_size], ready[batch_size:]
            timings[READ_DECODE] = timings.get(READ_DECODE, 0.0) + time.perf_counter() - started
            yield batch, []
            started = time.perf_counter()
    timings[READ_DECODE] = timings.get(READ_DECODE, 0.0) + time.perf_counter() - started
    if ready:
        yield ready, []
