"""The writer lock of a catalog on object storage: a lease held in a one-row Lance table.

Machines that share an ``s3://`` home share no file system to ``flock`` on, so the lock is a
row in ``<home>/writer.lance``: who holds it, for which command, until when. Taking it is a
Lance commit that replaces the row, based on the version where the row was read free (or
expired): two writers that try at once both base their commit on that version, and Lance's
commit conflict check lets exactly one of them through; the other sees the new holder and
waits. The holder renews the lease every :data:`RENEW_SECONDS`; a holder that died stops
renewing, and its lease runs out after :data:`TTL_SECONDS`, so a crashed job blocks the
catalog for a few minutes at most (clocks of the machines are assumed to agree to within
seconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import pyarrow as pa

from coyo_db.catalog import lance_tables

log = logging.getLogger(__name__)

LEASE_TABLE = "writer.lance"
TTL_SECONDS = 180.0
RENEW_SECONDS = 30.0

SCHEMA = pa.schema(
    [
        ("token", pa.string()),  # the holder's own id; null when free
        ("command", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
        ("since", pa.float64()),  # seconds since the epoch
        ("expires", pa.float64()),
    ]
)


class Lease:
    """One process's hold on the lease at `uri` (``<home>/writer.lance``)."""

    def __init__(self, uri: str, command: str) -> None:
        self.uri = uri
        self.command = command
        self.token = uuid.uuid4().hex
        self.since = time.time()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def try_take(self) -> dict[str, Any] | None:
        """Take the lease if it is free or expired: None when taken, else who holds it."""
        dataset = self._open()
        current = _current(dataset)
        if current is not None and current["token"] and current["expires"] > time.time():
            return _describe(current)
        if not self._commit(dataset, self._row()):
            return _describe(_current(self._open()) or {})
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True)
        self._renewer.start()
        return None

    def release(self) -> None:
        """Free the lease (if this process still holds it) and stop renewing it."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        for _ in range(5):
            dataset = self._open()
            current = _current(dataset)
            if current is None or current["token"] != self.token:
                return
            if self._commit(dataset, dict.fromkeys(SCHEMA.names)):
                return
        log.warning("could not free the writer lease at %s; it runs out by itself", self.uri)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            dataset = self._open()
            current = _current(dataset)
            if current is None or current["token"] != self.token:
                log.error(
                    "the writer lease at %s ran out and was taken over; stop this job", self.uri
                )
                return
            self._commit(dataset, self._row())

    def _row(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "command": self.command,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": self.since,
            "expires": time.time() + TTL_SECONDS,
        }

    def _open(self) -> Any:
        """The lease table, made with its one (free) row if it does not exist yet: every take
        then replaces that row's fragment, which is what makes two takes conflict."""
        if not lance_tables.exists(self.uri):
            import lance

            from coyo_db.catalog.object_store import storage_options

            free = pa.Table.from_pylist([dict.fromkeys(SCHEMA.names)], schema=SCHEMA)
            # another process may create it first: then this create fails, and that is fine
            with contextlib.suppress(OSError, ValueError):
                lance.write_dataset(
                    free, self.uri, mode="create", storage_options=storage_options(self.uri)
                )
        return lance_tables.open_dataset(self.uri)

    def _commit(self, dataset: Any, row: dict[str, Any]) -> bool:
        """Replace the row, based on `dataset`'s version; False when another commit won."""
        from coyo_db.errors import CatalogError

        batch = pa.RecordBatch.from_pylist([row], schema=SCHEMA)
        try:
            lance_tables.replace_all(self.uri, dataset, [batch], SCHEMA)
        except CatalogError:
            return False
        return True


def _current(dataset: Any) -> dict[str, Any] | None:
    rows = dataset.to_table().to_pylist()
    return rows[-1] if rows else None


def _describe(row: dict[str, Any]) -> dict[str, Any]:
    since = row.get("since")
    stamp = datetime.fromtimestamp(since).astimezone().isoformat() if since else ""
    return {
        "command": row.get("command") or "coyo-db",
        "pid": row.get("pid"),
        "host": row.get("host"),
        "since": stamp,
    }
