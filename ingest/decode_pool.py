"""The pool of processes that decode images for a job (ingest, labeling, refsets, audits).

spawn, not fork: the parent holds torch and its threads, which fork does not survive. With no
workers the "pool" decodes in the calling process, for debugging and tiny inputs.

Workers die with their parent: a job killed with kill -9 leaves no decode process behind (on
Linux the kernel sends them SIGKILL; elsewhere a watchdog thread notices the parent is gone).
They ignore Ctrl-C (a terminal sends SIGINT to the whole process group): the parent handles
it, cancels the chunks not started and shuts the pool down, so a stop prints no worker
traceback. A worker starts with SIGINT blocked (as multiprocessing starts its resource tracker)
and ignores it before unblocking, so a Ctrl-C during its start-up is dropped too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies


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


_CTRL_C = {signal.SIGINT}


class DecoderPool(ProcessPoolExecutor):
    """A process pool whose workers ignore Ctrl-C and that, left by an exception (Ctrl-C
    included), cancels the tasks not started instead of running them before it shuts down."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        # A submit may start a worker: it inherits this thread's signal mask, SIGINT blocked.
        # A Ctrl-C meanwhile stays pending for this process and is raised when unblocked.
        # Another thread of this process may take the signal all the same, and Python would
        # raise KeyboardInterrupt here between starting a worker and sending it its start-up
        # data (the worker then dies with a traceback): a Ctrl-C is held until submit is done.
        with _ctrl_c_held():
            if not hasattr(signal, "pthread_sigmask"):
                return super().submit(fn, *args, **kwargs)
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CTRL_C)
            try:
                return super().submit(fn, *args, **kwargs)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def __exit__(self, exc_type, exc_val, exc_tb):  # type: ignore[no-untyped-def]
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block, and raise it when the block is done (in
    the main thread; elsewhere Python delivers none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):  # Python's own handler raises KeyboardInterrupt
            previous(signal.SIGINT, None)


def decoder_pool(workers: int) -> Executor:
    """A pool of `workers` spawned decode processes, or an :class:`InlineExecutor` for 0."""
    if workers <= 0:
        return InlineExecutor()
    import multiprocessing

    return DecoderPool(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_worker,
        initargs=(os.getpid(),),
    )


def start_worker(parent: int) -> None:
    """Run in each worker as it starts: leave Ctrl-C to the parent, and end with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # drops a Ctrl-C pending since the start
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CTRL_C)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Run in each worker as it starts: end this process when `parent` ends."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
