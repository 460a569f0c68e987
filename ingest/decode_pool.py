"""The pool of processes that decode images for a job (ingest, labeling, refsets, audits).

spawn, not fork: the parent holds torch and its threads, which fork does not survive. With no
workers the "pool" decodes in the calling process, for debugging and tiny inputs.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor


class InlineExecutor(Executor):
    """Runs each task at submit time in this process, with a pool's interface."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller, as a pool would
            future.set_exception(exc)
        return future


def decode_workers(workers: int | None, *, most: int | None = None) -> int:
    """How many decode processes to use: `workers` if given, else one per core (at most
    `most`); none on a single core, where a process only adds copying."""
    if workers is not None:
        return max(0, workers)
    cores = os.cpu_count() or 1
    if cores == 1:
        return 0
    return cores if most is None else min(most, cores)


def decoder_pool(workers: int) -> Executor:
    """A pool of `workers` spawned decode processes, or an :class:`InlineExecutor` for 0."""
    if workers <= 0:
        return InlineExecutor()
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
