"""The `runs` table: a log of every job that changed the catalog."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.catalog import schemas
from coyo_db.catalog.ledger import new_run_id, now

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.catalog.summary import IngestSummary
    from coyo_db.progress import Progress

RUNS = "runs"


@dataclass
class Run:
    """One job; `finish` appends its row to `runs`."""

    catalog: Catalog
    command: str
    arguments: dict[str, Any]
    run_id: str = field(default_factory=new_run_id)
    started_at: datetime = field(default_factory=now)

    def finish(
        self,
        status: str = "ok",
        *,
        rows_read: int = 0,
        rows_written: int = 0,
        rows_quarantined: int = 0,
    ) -> None:
        from coyo_db.version import __version__

        row = {
            "run_id": self.run_id,
            "command": self.command,
            "arguments": json.dumps(self.arguments, default=str, sort_keys=True),
            "started_at": self.started_at,
            "finished_at": now(),
            "status": status,
            "rows_read": rows_read,
            "rows_written": rows_written,
            "rows_quarantined": rows_quarantined,
            "tool_version": __version__,
        }
        self.catalog.append(RUNS, pa.Table.from_pylist([row], schema=schemas.RUNS))

    @contextmanager
    def recorded(
        self, summary: IngestSummary, progress: Progress, started: float
    ) -> Iterator[None]:
        """Run a job's body; whatever way it ends (ok, failed, interrupted), close `progress`,
        set `summary.seconds` and append the run's row with the summary's counts."""
        status = "failed"
        try:
            yield
            status = "ok"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            progress.finish()
            summary.seconds = time.perf_counter() - started
            self.finish(
                status,
                rows_read=summary.rows_read,
                rows_written=summary.rows_written,
                rows_quarantined=summary.rows_quarantined,
            )
