"""Running an image job (:mod:`coyo_db.ingest.image_job`) on an engine, with its `runs` row.

:func:`run_image_job` opens the engine (:func:`open_engine`: local decode processes, or Ray),
lets the job load its models for that engine, plans its units, drives them through the engine,
and records the run: `runs` says how it ended (ok, failed or interrupted) with its counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from coyo_db.catalog import writer_lock
from coyo_db.catalog.runs import Run
from coyo_db.errors import InputError
from coyo_db.ingest.image_job import Engine, ImageJob, JobSummary
from coyo_db.progress import NullProgress, Progress

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def check_engine(engine: str, address: str | None) -> None:
    """Refuse an unknown engine, and an --address without the Ray engine (one clear line)."""
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if address is not None and engine != "ray":
        raise InputError("--address joins a Ray cluster: it needs --engine ray")


@contextmanager
def open_engine(
    engine: str = "local", *, address: str | None = None, workers: int | None = None
) -> Iterator[Engine]:
    """The engine a job runs on: local decode processes, or Ray (joining `address`, or a local
    instance started for the job and shut down after it)."""
    check_engine(engine, address)
    if engine == "ray":
        from coyo_db.ingest.ray_engine import RayEngine, session

        with session(address):
            yield RayEngine()
    else:
        from coyo_db.ingest.local_engine import LocalEngine

        yield LocalEngine(workers)


def run_image_job(
    job: ImageJob,
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> JobSummary:
    """Run `job` to the end on `engine`; its `runs` row says how it ended (ok, failed or
    interrupted) with its counts. Returns the job's summary."""
    started = time.perf_counter()
    progress = progress or NullProgress()
    # The writer lock comes before prepare(), which reads what the ledgers say is done.
    with (
        writer_lock.writing(writer_lock.place(job.catalog), job.command),
        open_engine(engine, address=address, workers=workers) as driver,
    ):
        job.arguments.setdefault("engine", driver.name)
        job.prepare(driver)
        run = Run(job.catalog, job.command, job.arguments)
        job.run_id = job.summary.run_id = run.run_id
        with run.recorded(job.summary, progress, started):
            works = job.plan()
            job.summary.inputs_seen = job.summary.inputs_skipped + len(works)
            counts = [work.unit.count() for work in works]
            total = None if any(c is None for c in counts) else sum(counts)
            progress.start(job.command, total=total)
            driver.run(job, works, progress)
            job.finish()
    log.info("%s", job.summary.line())
    return job.summary
