"""The catalog's writer lock: one writing job at a time, the others wait their turn.

Every job that changes the catalog (ingest, label, dedup, refset, audit, taxonomy, index) holds
the lock from before it reads what is already done (its ledgers) until its last commit, so two
jobs started together run one after the other and the second one finds the first one's work
done: each row lands once. A job that has to wait says for whom, once::

    waiting for `ingest metadata` (pid 4242, since 20:31:07) to finish writing /data/home

The lock is an advisory ``flock`` on ``<home>/writer.lock``: the kernel releases it when its
holder dies, kill -9 included, so a crashed job never leaves the catalog locked. The file also
names the holder, for the message above. Holding is re-entrant within a process (a job that
calls another job's library function does not wait for itself).

``COYO_DB_LOCK_TIMEOUT`` (seconds) makes a waiting job give up with :class:`CatalogBusyError`
instead of waiting for good; 0 means do not wait at all.

For an object-store home the lock file lives in the home's local cache folder, so it orders
the writers of one machine; writers on different machines rely on the ledger's commit check
(see docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from coyo_db.errors import CatalogError

log = logging.getLogger(__name__)

LOCK_FILE = "writer.lock"
TIMEOUT_ENV = "COYO_DB_LOCK_TIMEOUT"
_POLL_SECONDS = 0.2


class CatalogBusyError(CatalogError):
    """Another job holds the catalog's writer lock and the wait ran out."""


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


@contextmanager
def writing(home: Path, command: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the writer lock of the catalog at `home` for the body (see the module doc).

    `timeout` seconds (default: ``$COYO_DB_LOCK_TIMEOUT``, else wait for good) bounds the wait.
    """
    acquire(home, command, timeout)
    try:
        yield
    finally:
        release(home)


def acquire(home: Path, command: str, timeout: float | None = None) -> None:
    """Take the writer lock of the catalog at `home`, waiting for the holder if needed."""
    path = (home / LOCK_FILE).resolve()
    with _guard:
        held = _held.get(path)
        if held is not None:
            held.depth += 1
            return
    if timeout is None:
        timeout = _timeout_from_env()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _wait_for(fd, path, command, timeout)
    except BaseException:
        os.close(fd)
        raise
    _write_holder(fd, command)
    with _guard:
        _held[path] = _Held(fd, 1)


def release(home: Path) -> None:
    """Give the lock taken by :func:`acquire` back (the last of nested holds releases it)."""
    path = (home / LOCK_FILE).resolve()
    with _guard:
        held = _held.get(path)
        if held is None:
            return
        held.depth -= 1
        if held.depth:
            return
        del _held[path]
    try:
        os.ftruncate(held.fd, 0)
    finally:
        os.close(held.fd)  # closing the descriptor drops the flock


def holder(home: Path) -> dict[str, object] | None:
    """Who holds the lock of the catalog at `home` now, as it wrote itself down; None when
    nobody does."""
    path = home / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _wait_for(fd: int, path: Path, command: str, timeout: float | None) -> None:
    started = time.monotonic()
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if said:
                log.warning("the catalog is free again; `%s` goes on", command)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise CatalogBusyError(
                f"the catalog at {path.parent} is busy: {_describe(_read_holder(path))} "
                "is writing to it; run this again when it has finished"
            )
        if not said:
            log.warning(
                "waiting for %s to finish writing %s", _describe(_read_holder(path)), path.parent
            )
            said = True
        time.sleep(_POLL_SECONDS)


def _write_holder(fd: int, command: str) -> None:
    text = json.dumps(
        {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


def _read_holder(path: Path) -> dict[str, object] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def _describe(info: dict[str, object] | None) -> str:
    if not info:
        return "another coyo-db job"
    since = str(info.get("since", ""))
    clock = since[11:19] if len(since) >= 19 else since
    return f"`{info.get('command', 'coyo-db')}` (pid {info.get('pid')}, since {clock})"


def _timeout_from_env() -> float | None:
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise CatalogError(f"{TIMEOUT_ENV} must be a number of seconds, not {value!r}") from None
    if seconds < 0:
        raise CatalogError(f"{TIMEOUT_ENV} must not be negative")
    return seconds
