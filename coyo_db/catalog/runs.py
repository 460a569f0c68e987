"""The `runs` table: a log of every job that changed the catalog.

A run's row is written when the job starts, with status ``running``, and completed when it
ends: ``ok``, ``failed`` (with the error) or ``interrupted`` (Ctrl-C), with its counts and the
Lance version of every table it wrote (``tables_written``, a JSON object). A job killed outright
leaves its row ``running``. Each of the two writes is one Lance commit (an upsert on ``run_id``).

    with recorded_run(catalog, "dedup phash", {"radius": 4}) as run:
        ...
        run.counts(rows_read=n, rows_written=m)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.catalog import tables, writer_lock
from coyo_db.catalog.ledger import new_run_id, now

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.catalog.summary import IngestSummary
    from coyo_db.progress import Progress

log = logging.getLogger(__name__)

RUNNING = "running"
OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, OK, FAILED, INTERRUPTED)


@dataclass
class Run:
    """One job. Creating it writes its `running` row; :meth:`finish` completes the row."""

    catalog: Catalog
    command: str
    arguments: dict[str, Any]
    run_id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=now)
    status: str = field(default=RUNNING, init=False)
    rows_read: int = field(default=0, init=False)
    rows_written: int = field(default=0, init=False)
    rows_quarantined: int = field(default=0, init=False)
    versions_before: dict[str, int] = field(default_factory=dict, init=False)
    #: hold the catalog's writer lock until the run ends (a job that writes tables); an export,
    #: which writes its own row only, runs beside writers
    exclusive: bool = True

    def __post_init__(self) -> None:
        if self.exclusive:
            writer_lock.acquire(writer_lock.place(self.catalog), self.command)
        try:
            self.versions_before = self.catalog.versions()
            self._write(None, {}, None)
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self.exclusive:
            writer_lock.release(writer_lock.place(self.catalog))

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def counts(
        self,
        *,
        rows_read: int | None = None,
        rows_written: int | None = None,
        rows_quarantined: int | None = None,
    ) -> None:
        """Set the counts the run's row reports (those not given stay as they are)."""
        if rows_read is not None:
            self.rows_read = int(rows_read)
        if rows_written is not None:
            self.rows_written = int(rows_written)
        if rows_quarantined is not None:
            self.rows_quarantined = int(rows_quarantined)

    def finish(
        self,
        status: str = OK,
        *,
        rows_read: int | None = None,
        rows_written: int | None = None,
        rows_quarantined: int | None = None,
        tables_written: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """Complete the run's row: `status`, the counts (those not given are the ones set with
        :meth:`counts`), and the versions of the tables written since the run started
        (compared with the catalog's versions then, plus any given in `tables_written`)."""
        if status not in STATUSES or status == RUNNING:
            raise ValueError(f"a run finishes ok, failed or interrupted, not {status!r}")
        self.counts(
            rows_read=rows_read, rows_written=rows_written, rows_quarantined=rows_quarantined
        )
        written = {**self.written_since_start(), **(tables_written or {})}
        self._write(status, written, error)
        self.status = status

    def written_since_start(self) -> dict[str, int]:
        """{table: version} of the tables (but `runs`) committed to since the run started."""
        after = self.catalog.versions()
        return {
            name: version
            for name, version in sorted(after.items())
            if name != tables.RUNS.name and self.versions_before.get(name) != version
        }

    @contextmanager
    def recorded(
        self, summary: IngestSummary, progress: Progress, started: float
    ) -> Iterator[None]:
        """Run a job's body; whatever way it ends (ok, failed, interrupted), close `progress`,
        set `summary.seconds` and complete the run's row with the summary's counts."""

        def wrap_up() -> None:
            progress.finish()
            summary.seconds = time.perf_counter() - started
            self.counts(
                rows_read=summary.rows_read,
                rows_written=summary.rows_written,
                rows_quarantined=summary.rows_quarantined,
            )

        with self._ending(wrap_up):
            yield

    @contextmanager
    def _ending(self, wrap_up: Any = None) -> Iterator[None]:
        """Finish the run as the body ends: ok, interrupted on KeyboardInterrupt, failed on any
        other exception. A body that finished the run itself is left as it finished it."""
        try:
            try:
                yield
            except BaseException as exc:
                if wrap_up is not None:
                    wrap_up()
                if not self.finished:
                    status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
                    try:
                        self.finish(status, error=_describe(exc))
                    except Exception:  # the job's own error matters more than its log row
                        log.exception("could not record the run %s in `runs`", self.run_id)
                raise
            if wrap_up is not None:
                wrap_up()
            if not self.finished:
                self.finish(OK)
        finally:
            self._unlock()

    def _write(self, status: str | None, written: Mapping[str, int], error: str | None) -> None:
        from coyo_db.version import __version__

        row = {
            "run_id": self.run_id,
            "command": self.command,
            "arguments": json.dumps(self.arguments, default=str, sort_keys=True),
            "started_at": self.started_at,
            "finished_at": None if status is None else now(),
            "status": status or RUNNING,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_quarantined": self.rows_quarantined,
            "tool_version": __version__,
            "tables_written": json.dumps(dict(written), sort_keys=True),
            "error": error,
        }
        upsert_runs(self.catalog, tables.RUNS.from_pylist([row]))


@contextmanager
def recorded_run(
    catalog: Catalog, command: str, arguments: dict[str, Any], *, exclusive: bool = True
) -> Iterator[Run]:
    """Log the body as one run of `command`: its row is written now (``running``) and completed
    as the body ends (``ok``, ``failed`` or ``interrupted``). Set counts with
    :meth:`Run.counts`. Unless `exclusive` is false the body holds the catalog's writer lock
    (:mod:`coyo_db.catalog.writer_lock`)."""
    run = Run(catalog, command, arguments, exclusive=exclusive)
    with run._ending():
        yield run


def upsert_runs(catalog: Catalog, rows: pa.Table) -> None:
    """Insert or replace `rows` of `runs` by run_id, in one commit."""
    spec = tables.RUNS
    if not catalog.has_table(spec.name):
        catalog.append(spec.name, rows)
        return
    dataset = catalog.dataset(spec.name)
    missing = [f for f in spec.schema if f.name not in dataset.schema.names]
    if missing:  # a catalog from before these columns: add them, empty
        dataset.add_columns(missing)
        dataset = catalog.dataset(spec.name)
    rows = rows.select(dataset.schema.names).cast(dataset.schema)
    dataset.merge_insert("run_id").when_matched_update_all().when_not_matched_insert_all().execute(
        rows
    )


def read_runs(catalog: Catalog) -> pa.Table:
    """The `runs` table, oldest first (empty with its schema when nothing ran yet)."""
    if not catalog.has_table(tables.RUNS.name):
        return tables.RUNS.empty()
    return catalog.dataset(tables.RUNS.name).to_table().sort_by("started_at")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
