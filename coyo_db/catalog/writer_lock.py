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

A catalog on object storage (``s3://``) has no shared file system to lock: there the lock is
a lease committed to ``<home>/writer.lance`` (:mod:`coyo_db.catalog.remote_lease`), which
Lance's commit conflict check gives to one writer at a time across machines.

The functions take the catalog's :func:`place`: its folder, or its URI when remote.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from coyo_db.catalog import remote_lease
from coyo_db.errors import CatalogError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

LOCK_FILE = "writer.lock"
TIMEOUT_ENV = "COYO_DB_LOCK_TIMEOUT"
_POLL_SECONDS = 0.2


class CatalogBusyError(CatalogError):
    """Another job holds the catalog's writer lock and the wait ran out."""


@dataclass
class _Held:
    release: Callable[[], None]
    depth: int


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def place(catalog: Catalog) -> Path | str:
    """What the lock of `catalog` is taken on: its folder, or its URI for a remote home."""
    return catalog.location if catalog.remote else catalog.home


@contextmanager
def writing(where: Path | str, command: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the writer lock of the catalog at `where` (see :func:`place`) for the body.

    `timeout` seconds (default: ``$COYO_DB_LOCK_TIMEOUT``, else wait for good) bounds the wait.
    """
    acquire(where, command, timeout)
    try:
        yield
    finally:
        release(where)


def acquire(where: Path | str, command: str, timeout: float | None = None) -> None:
    """Take the writer lock of the catalog at `where`, waiting for the holder if needed."""
    key = _key(where)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
            return
    if timeout is None:
        timeout = _timeout_from_env()
    if isinstance(where, str):
        release = _take_lease(where, command, timeout)
    else:
        release = _take_flock(Path(key), command, timeout)
    with _guard:
        _held[key] = _Held(release, 1)


def release(where: Path | str) -> None:
    """Give the lock taken by :func:`acquire` back (the last of nested holds releases it)."""
    key = _key(where)
    with _guard:
        held = _held.get(key)
        if held is None:
            return
        held.depth -= 1
        if held.depth:
            return
        del _held[key]
    held.release()


def _key(where: Path | str) -> str:
    if isinstance(where, str):
        return f"{where.rstrip('/')}/{remote_lease.LEASE_TABLE}"
    return str((where / LOCK_FILE).resolve())


def _take_flock(path: Path, command: str, timeout: float | None) -> Callable[[], None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_take() -> dict[str, object] | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {}
        return None

    try:
        _wait(try_take, str(path.parent), command, timeout)
    except BaseException:
        os.close(fd)
        raise
    _write_holder(fd, command)

    def give_back() -> None:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    return give_back


def _take_lease(uri: str, command: str, timeout: float | None) -> Callable[[], None]:
    lease = remote_lease.Lease(_key(uri), command)
    _wait(lease.try_take, uri, command, timeout)
    return lease.release


def holder(home: Path) -> dict[str, object] | None:
    """Who holds the lock of the local catalog at `home` now, as it wrote itself down; None
    when nobody does."""
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


def _wait(
    try_take: Callable[[], dict[str, object] | None],
    where: str,
    command: str,
    timeout: float | None,
) -> None:
    """Call `try_take` until it takes the lock (returns None), saying once whom it waits for."""
    started = time.monotonic()
    said = False
    while True:
        holder = try_take()
        if holder is None:
            if said:
                log.warning("the catalog is free again; `%s` goes on", command)
            return
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise CatalogBusyError(
                f"the catalog at {where} is busy: {_describe(holder)} "
                "is writing to it; run this again when it has finished"
            )
        if not said:
            log.warning("waiting for %s to finish writing %s", _describe(holder), where)
            said = True
        time.sleep(_POLL_SECONDS if not where.startswith(("s3://", "gs://", "az://")) else 2.0)


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
    host = (
        f" on {info['host']}"
        if info.get("host") and info.get("host") != socket.gethostname()
        else ""
    )
    return f"`{info.get('command', 'coyo-db')}` (pid {info.get('pid')}{host}, since {clock})"


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
