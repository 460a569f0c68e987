"""The ledger: which inputs (files, shards) each table already holds: what makes ingest resumable.

An input is ingested in three commits, each carrying the input's fingerprint:

1. its bad records into `quarantine`;
2. its good rows into the target table (one atomic Lance commit);
3. a row in `ledger` saying it is done.

A run that dies after (2) is finished by :meth:`Ledger.done` reading the target table's
commit history; one that dies before (2) left quarantine rows that :meth:`discard_partial`
removes before the input is ingested again. Either way every row ends up there exactly once.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import xxhash

from coyo_db import faults
from coyo_db.catalog import lance_tables, tables

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def now() -> datetime:
    return datetime.now(UTC)


FINGERPRINT_PREFIX = "xxh3:"
CHUNK_BYTES = 8 << 20  # large reads keep the hash, not the system calls, the bottleneck


class Fingerprint(str):
    """A content fingerprint (``xxh3:<hex>``) that also knows the form earlier versions gave
    the same input, computed only when asked (see :meth:`Ledger.done`).

    A plain ``str`` everywhere else: it is written, compared and hashed as its value.
    """

    _legacy_of: Callable[[], str] | None
    _legacy: str | None

    def __new__(cls, value: str, legacy_of: Callable[[], str] | None = None) -> Fingerprint:
        self = super().__new__(cls, value)
        self._legacy_of = legacy_of
        self._legacy = None
        return self

    def legacy(self) -> str | None:
        """The fingerprint an earlier version recorded for this input (None: there is none)."""
        if self._legacy is None and self._legacy_of is not None:
            self._legacy = self._legacy_of()
        return self._legacy

    def derive(self, make: Callable[[str], str]) -> Fingerprint:
        """The fingerprint `make` builds from this one (a per-output key), legacy form included."""
        legacy_of = None if self._legacy_of is None else partial(_derived_legacy, self, make)
        return Fingerprint(make(str(self)), legacy_of)


def _derived_legacy(base: Fingerprint, make: Callable[[str], str]) -> str:
    return make(base.legacy() or "")


def new_fingerprint(digest: Any, legacy_of: Callable[[], str] | None = None) -> Fingerprint:
    """The fingerprint of a finished xxh3-128 `digest`."""
    return Fingerprint(FINGERPRINT_PREFIX + digest.hexdigest(), legacy_of)


def hash_file(digest: Any, path: str | os.PathLike[str], buffer: bytearray) -> int:
    """Feed every byte of the file at `path` to `digest`, read into `buffer`; the byte count."""
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while count := fh.readinto(view):
            digest.update(view[:count])
            total += count
    return total


def file_fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """A content fingerprint: an xxh3-128 hash of every byte of the file.

    The path plays no part: the same file copied elsewhere is recognised, and a file with any
    byte changed is not.
    """
    size = os.stat(path).st_size
    digest = xxhash.xxh3_128()
    hash_file(digest, path, bytearray(max(1, min(size, CHUNK_BYTES))))
    return new_fingerprint(digest, partial(legacy_fingerprint, path))


def legacy_fingerprint(path: str | os.PathLike[str], tail_bytes: int = 1 << 16) -> str:
    """The fingerprint versions before :func:`file_fingerprint` recorded: size plus a hash of
    the head and tail bytes (kept to recognise the files of catalogs they wrote)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(tail_bytes))
        if size > tail_bytes:
            fh.seek(max(tail_bytes, size - tail_bytes))
            digest.update(fh.read())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows of one finished input."""

    input: str
    fingerprint: str
    rows_read: int
    rows_written: int
    rows_quarantined: int


def commit_properties(record: LedgerEntry, run_id: str) -> dict[str, str]:
    """The transaction properties of an input's commit: what the ledger recovers its row from
    when the row itself was never written."""
    return {
        "fingerprint": record.fingerprint,
        "input": record.input,
        "rows_read": str(record.rows_read),
        "rows_written": str(record.rows_written),
        "rows_quarantined": str(record.rows_quarantined),
        "run_id": run_id,
    }


class Ledger:
    """The finished inputs of one target table."""

    def __init__(self, catalog: Catalog, table_name: str) -> None:
        self.catalog = catalog
        self.table_name = table_name
        self._versions: dict[str, int] = {}  # fingerprint -> the newest table version it committed
        self._done = self._load()
        self._holds_legacy: bool | None = None  # whether any entry predates xxh3

    def _load(self) -> dict[str, LedgerEntry]:
        done: dict[str, LedgerEntry] = {}
        recorded_version = 0
        if self.catalog.has_table(tables.LEDGER.name):
            rows = (
                self.catalog.dataset(tables.LEDGER.name)
                .to_table(filter=f"table_name = '{self.table_name}'")
                .to_pylist()
            )
            for row in rows:
                done[row["fingerprint"]] = LedgerEntry(
                    row["input"],
                    row["fingerprint"],
                    row["rows_read"],
                    row["rows_written"],
                    row["rows_quarantined"],
                )
                version = row["table_version"] or 0
                self._note_version(row["fingerprint"], version)
                recorded_version = max(recorded_version, version)
        # Commits of the target table whose `ledger` row never got written (a killed run):
        # only commits newer than the newest recorded one can be missing. Without a `ledger`
        # table (a new catalog, or one whose ledger was the older `sources` table, which is not
        # read) recorded_version stays 0 and every version of the target table is scanned.
        recovered = []
        uri = self.catalog.table_uri(self.table_name)
        for version, props in lance_tables.committed_properties(uri, recorded_version):
            fingerprint = props.get("fingerprint")
            if fingerprint and fingerprint not in done:
                record = LedgerEntry(
                    # commits written before the ledger said `input` carry it as `source`
                    props.get("input", props.get("source", "")),
                    fingerprint,
                    int(props.get("rows_read", 0)),
                    int(props.get("rows_written", 0)),
                    int(props.get("rows_quarantined", 0)),
                )
                done[fingerprint] = record
                self._note_version(fingerprint, version)
                recovered.append((record, version, props.get("run_id", "")))
        if recovered:
            self._write(recovered)
        return done

    def done(self, fingerprint: str) -> LedgerEntry | None:
        """The entry of a finished input with this fingerprint, if any.

        A :class:`Fingerprint` not found is looked up again in the form earlier versions
        recorded, when the ledger holds entries of that form (a catalog they wrote).
        """
        entry = self._done.get(fingerprint)
        if entry is None and isinstance(fingerprint, Fingerprint) and self._has_legacy():
            legacy = fingerprint.legacy()
            entry = self._done.get(legacy) if legacy else None
        return entry

    def _note_version(self, fingerprint: str, version: int) -> None:
        self._versions[fingerprint] = max(version, self._versions.get(fingerprint, 0))

    def committed(self, prefix: str) -> list[tuple[LedgerEntry, int]]:
        """(entry, the table version it last committed) of every finished input whose
        fingerprint starts with `prefix`."""
        return [
            (entry, self._versions.get(fp, 0))
            for fp, entry in self._done.items()
            if fp.startswith(prefix)
        ]

    def _has_legacy(self) -> bool:
        if self._holds_legacy is None:
            self._holds_legacy = any(not f.startswith(FINGERPRINT_PREFIX) for f in self._done)
        return self._holds_legacy

    def discard_partial(self, fingerprint: str) -> None:
        """Remove quarantine rows left by an unfinished attempt at this input."""
        if self.catalog.has_table(tables.QUARANTINE.name):
            dataset = self.catalog.dataset(tables.QUARANTINE.name)
            where = f"fingerprint = '{fingerprint}' AND table_name = '{self.table_name}'"
            # A delete commits a new version even when nothing matches: look first.
            if dataset.count_rows(filter=where):
                dataset.delete(where)

    def quarantine(self, rows: pa.Table, fingerprint: str, run_id: str) -> None:
        """Commit the bad records of an input (schema: :data:`tables.QUARANTINE.schema`)."""
        if rows.num_rows:
            self.catalog.append(
                tables.QUARANTINE.name,
                rows.cast(tables.QUARANTINE.schema),
                {"fingerprint": fingerprint, "run_id": run_id, "target": self.table_name},
            )

    def commit_input(self, transaction: object, record: LedgerEntry, run_id: str) -> int:
        """Commit an input's staged rows and mark it done; returns the table's new version."""
        props = commit_properties(record, run_id)
        dataset = lance_tables.commit(self.catalog.table_uri(self.table_name), transaction, props)
        faults.point("ledger.after_table_commit")
        self.record_commit(record, dataset.version, run_id)
        return dataset.version

    def record_commit(self, record: LedgerEntry, version: int, run_id: str) -> None:
        """Write the ledger row of a commit made elsewhere, committed with
        :func:`commit_properties` (so that a crash before this row is recovered from them when
        a ledger is next opened)."""
        self._write([(record, version, run_id)])
        self._done[record.fingerprint] = record
        self._note_version(record.fingerprint, version)

    def _write(self, entries: list[tuple[LedgerEntry, int, str]]) -> None:
        stamp = now()
        table = pa.Table.from_pylist(
            [
                {
                    "table_name": self.table_name,
                    "input": record.input,
                    "fingerprint": record.fingerprint,
                    "rows_read": record.rows_read,
                    "rows_written": record.rows_written,
                    "rows_quarantined": record.rows_quarantined,
                    "table_version": version,
                    "run_id": run_id,
                    "ingested_at": stamp,
                }
                for record, version, run_id in entries
            ],
            schema=tables.LEDGER.schema,
        )
        self.catalog.append(tables.LEDGER.name, table)


def quarantine_rows(
    *,
    table_name: str,
    input: str,
    fingerprint: str,
    run_id: str,
    row_index: pa.Array,
    ids: pa.Array,
    reasons: pa.Array,
    records: pa.Array,
) -> pa.Table:
    """Build quarantine rows from parallel arrays (records are JSON text of the bad rows)."""
    n = len(row_index)
    return pa.table(
        {
            "table_name": pa.array([table_name] * n, pa.string()),
            "input": pa.array([input] * n, pa.string()),
            "fingerprint": pa.array([fingerprint] * n, pa.string()),
            "row_index": row_index.cast(pa.int64()),
            "id": ids.cast(pa.int64()),
            "reason": reasons.cast(pa.string()),
            "record": records.cast(pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
            "quarantined_at": pa.array([now()] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=tables.QUARANTINE.schema,
    )
