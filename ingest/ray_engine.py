"""The Ray engine of the image-job runner: Ray Data reads and decodes, an actor pool runs the
stage, the driver collects and commits each unit.

::

    units --read_unit (CPU tasks)--> Arrow tables (records, decode facts, pixels)
          --StageActor (actor pool, a GPU each)--> the same rows plus the stage's outputs
          --driver--> job.reject / job.collect / job.commit, once per unit, when it is whole

:func:`map_units` is the generic part: units in (the image jobs' units are shards, but it does
not care what they are), one finished table of rows per unit back to the driver, in any order,
each row once. :class:`RayEngine` is what :func:`coyo_db.ingest.image_job.run_image_job`
drives: it groups units by stage, builds the actor pool for each group, and turns each finished
table back into the decoded images and output arrays the job's own code takes (the local engine
hands it the same).

Failures: a read task that dies is retried (``max_retries``), an actor that dies is restarted
and its batch retried (``max_restarts`` / ``max_task_retries``); rows a retry sends twice are
dropped by position, so a unit is never committed with a row twice nor with one missing.

Ray is imported only here, and this module only when a job asks for ``engine="ray"``.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.errors import InputError
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.ingest.image_job import DecodePlan, ImageJob, UnitWork

log = logging.getLogger(__name__)

UNIT = "_unit"  # the unit's index in the job's list
POSITION = "_pos"  # the row's position within its unit
TOTAL = "_total"  # rows in the unit, on the unit's last table only (-1 elsewhere)
_BOOKKEEPING = (UNIT, POSITION, TOTAL)

# A crash that repeats (a decoder that segfaults on one image) must fail the job, not loop.
MAX_RETRIES = 3

Read = Callable[[Any], Iterator[pa.Table]]
OnUnit = Callable[[int, pa.Table | None], None]


@dataclass(frozen=True)
class ActorPool:
    """The actor-pool step: ``cls(**kwargs)`` per actor, then ``instance(table) -> table``."""

    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    actors: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ModuleNotFoundError:
        raise InputError("the Ray engine needs Ray Data: pip install 'coyo-db[ray]'") from None
    return ray


@contextmanager
def session(address: str | None = None) -> Iterator[Any]:
    """Ray, connected: joins `address` (``auto``, ``ray://host:10001``, ``host:6379``), or the
    instance this process already holds, or starts a local one (shut down at the end)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    from coyo_db.ingest.ray_logs import ray_output_to_file

    with ray_output_to_file():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                # Workers' stdout would interleave with the progress bar; their errors still
                # reach this process as exceptions, and their logs stay in Ray's session folder.
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, ValueError) as exc:
            where = address or "a local instance"
            raise InputError(f"cannot start or join Ray at {where}: {exc}") from None
        try:
            yield ray
        finally:
            ray.shutdown()


def cluster_resources() -> dict[str, float]:
    """CPUs, GPUs and memory of the connected cluster."""
    import ray

    return dict(ray.cluster_resources())


def map_units(
    units: Sequence[Any],
    read: Read,
    stage: ActorPool,
    on_unit: OnUnit,
    *,
    progress: Progress | None = None,
) -> None:
    """Run `read` and `stage` over `units` on Ray Data; `on_unit` each unit once, in the
    driver, as soon as all its rows are back (``None`` for a unit that yielded no rows)."""
    import ray.data

    progress = progress or NullProgress()
    if not units:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    items = ray.data.from_items(
        [{UNIT: i} for i in range(len(units))], override_num_blocks=len(units)
    )
    with warnings.catch_warnings():
        # Retries have no named parameter in Ray Data 2.60 and pass as remote args, which it
        # flags as deprecated; without them a crash that repeats would be retried forever.
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = items.map_batches(
            functools.partial(_read_task, units=list(units), read=read),
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            max_retries=MAX_RETRIES,
        ).map_batches(
            _StageActor,
            fn_constructor_kwargs={"cls": stage.cls, "kwargs": stage.kwargs},
            batch_size=stage.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=stage.actors),
            num_gpus=stage.num_gpus or None,
            num_cpus=stage.num_cpus,
            max_restarts=MAX_RETRIES,
            max_task_retries=MAX_RETRIES,
        )
    gather = _Gather(on_unit, progress)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        gather.add(batch)
    gather.close(len(units))


def _read_task(batch: dict[str, np.ndarray], *, units: list[Any], read: Read) -> Iterator[pa.Table]:
    """One unit: its tables with the row positions, the total on the last one."""
    for index in batch[UNIT].tolist():
        position = 0
        previous: pa.Table | None = None
        for table in read(units[index]):
            if table.num_rows == 0:
                continue
            if previous is not None:
                yield _number(previous, index, position - previous.num_rows, -1)
            previous = table
            position += table.num_rows
        if previous is not None:
            yield _number(previous, index, position - previous.num_rows, position)


def _number(table: pa.Table, unit: int, first: int, total: int) -> pa.Table:
    n = table.num_rows
    return (
        table.append_column(UNIT, pa.array(np.full(n, unit, np.int64)))
        .append_column(POSITION, pa.array(np.arange(first, first + n, dtype=np.int64)))
        .append_column(TOTAL, pa.array(np.full(n, total, np.int64)))
    )


class _StageActor:
    """Wraps a job's stage: the bookkeeping columns pass by it untouched."""

    def __init__(self, cls: type, kwargs: dict[str, Any]) -> None:
        self.inner = cls(**kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = table.select(list(_BOOKKEEPING))
        out = self.inner(table.drop_columns(list(_BOOKKEEPING)))
        if out.num_rows != table.num_rows:
            raise RuntimeError(f"{type(self.inner).__name__} must return one row per input row")
        for name in _BOOKKEEPING:
            out = out.append_column(name, kept[name])
        return out


class _Gather:
    """Rows by unit until a unit is whole; then `on_unit` once."""

    def __init__(self, on_unit: OnUnit, progress: Progress) -> None:
        self.on_unit = on_unit
        self.progress = progress
        self.parts: dict[int, list[pa.Table]] = {}
        self.received: dict[int, int] = {}
        self.totals: dict[int, int] = {}
        self.done: set[int] = set()

    def add(self, batch: pa.Table) -> None:
        unit_column = batch[UNIT].to_numpy()
        for index in np.unique(unit_column).tolist():
            if index in self.done:  # a retry sent rows of a unit already committed
                continue
            part = batch.filter(pa.array(unit_column == index))
            self.parts.setdefault(index, []).append(part)
            self.received[index] = self.received.get(index, 0) + part.num_rows
            total = pc.max(part[TOTAL]).as_py()
            if total is not None and total >= 0:
                self.totals[index] = total
            if index in self.totals and self.received[index] >= self.totals[index]:
                self._finish(index)

    def _finish(self, index: int) -> None:
        table = _unique_rows(pa.concat_tables(self.parts[index]))
        if table.num_rows < self.totals[index]:
            return  # duplicates from a retry counted twice: more rows are still to come
        del self.parts[index]
        self.done.add(index)
        self.progress.advance(table.num_rows)
        self.on_unit(index, table.drop_columns(list(_BOOKKEEPING)))

    def close(self, count: int) -> None:
        incomplete = sorted(self.parts)
        if incomplete:
            raise RuntimeError(f"Ray returned unit(s) {incomplete} incomplete")
        for index in range(count):
            if index not in self.done:  # a unit with no records at all
                self.done.add(index)
                self.on_unit(index, None)


def _unique_rows(table: pa.Table) -> pa.Table:
    """Rows sorted by position, each position once (a retried task may send some twice)."""
    positions = table[POSITION].to_numpy()
    _, first = np.unique(positions, return_index=True)
    return table.take(pa.array(first))


# ---- the runner's engine -------------------------------------------------------------------


def cluster_device(device: str) -> str:
    """``auto`` -> ``cuda`` when the cluster has GPUs, else ``cpu``; a CUDA device needs GPUs."""
    gpus = cluster_resources().get("GPU", 0)
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise InputError(f"device {device!r}: the Ray cluster has no GPUs")
    return device


def actor_layout(device: str) -> tuple[int, int, float]:
    """(actors, CPU threads per actor, GPUs per actor) for a stage on this cluster.

    GPUs: one actor per GPU. CPUs only: half the CPUs run the stage (actors of up to 8
    threads), half decode, which is where a CPU-only job spends its time.
    """
    resources = cluster_resources()
    if device.startswith("cuda"):
        return max(1, int(resources.get("GPU", 0))), 1, 1.0
    cpus = max(1, int(resources.get("CPU", 1)))
    threads = min(8, max(1, cpus // 4))
    return max(1, cpus // (2 * threads)), threads, 0.0


def read_unit(unit: Any, *, plan: DecodePlan, chunk: int) -> Iterator[pa.Table]:
    """A Ray read task: one unit's records decoded `chunk` at a time, as Arrow tables."""
    from coyo_db.ingest.decode import decode_batch
    from coyo_db.ingest.local_engine import chunked
    from coyo_db.ingest.ray_tables import decoded_table

    for records in chunked(unit.records(), chunk):
        decoded = decode_batch(records, plan.specs, **plan.options())
        yield decoded_table(decoded, plan.specs, keep_bytes=plan.keep_bytes)


class StageActor:
    """One actor of the stage pool: the job's stage, built once on this actor's device, called
    on the good rows of each table; its outputs come back as ``out:<name>`` columns."""

    def __init__(self, factory: Callable[..., Any], kwargs: dict[str, Any], specs: tuple) -> None:
        self.stage = factory(**kwargs)
        self.specs = specs

    def __call__(self, table: pa.Table) -> pa.Table:
        from coyo_db.ingest.ray_tables import OUTPUT_PREFIX, good_rows, pixels, scatter

        good = good_rows(table)
        outputs: dict[str, np.ndarray] = {}
        if good.any():
            arrays = {
                spec: pixels(table[f"px{i}"], spec)[good] for i, spec in enumerate(self.specs)
            }
            texts = [t for t, ok in zip(table["text"].to_pylist(), good, strict=True) if ok]
            outputs = self.stage(arrays, texts)
        out = table.drop_columns([f"px{i}" for i in range(len(self.specs))])
        for name, values in outputs.items():
            out = out.append_column(OUTPUT_PREFIX + name, scatter(values, good))
        return out


class RayEngine:
    """Runs a job's units on the Ray instance this process is connected to."""

    name = "ray"

    def device(self, requested: str) -> str:
        return cluster_device(requested)

    def stage_resources(self, device: str) -> tuple[int, int, float]:
        return actor_layout(device)

    def run(self, job: ImageJob, works: list[UnitWork], progress: Progress) -> None:
        from coyo_db.ingest.image_job import commit_unit, hand_bad, hand_good
        from coyo_db.ingest.ray_tables import unpack

        groups: dict[tuple[str, DecodePlan], list[UnitWork]] = {}
        for work in works:
            groups.setdefault((work.stage.key, work.decode), []).append(work)
        started = time.perf_counter()
        timings = job.summary.timings
        timings.clear()
        timings.update({"ray (read, decode, infer)": 0.0, "write": 0.0})
        for (_, plan), group in groups.items():
            spec = group[0].stage
            actors, threads, gpus = actor_layout(spec.kwargs.get("device", "cpu"))
            pool = ActorPool(
                StageActor,
                {"factory": spec.factory, "kwargs": spec.kwargs, "specs": plan.specs},
                batch_size=job.batch_size,
                actors=actors,
                num_gpus=gpus,
                num_cpus=threads,
            )
            read = functools.partial(read_unit, plan=plan, chunk=job.batch_size)

            def on_unit(index: int, table: pa.Table | None, group=group) -> None:
                work = group[index]
                if table is not None:
                    good, bad, outputs = unpack(table)
                    hand_bad(job, work, bad)
                    hand_good(job, work, good, outputs)
                commit_unit(job, work)

            map_units([w.unit for w in group], read, pool, on_unit, progress=progress)
        elapsed = time.perf_counter() - started
        timings["ray (read, decode, infer)"] = elapsed - timings["write"]
