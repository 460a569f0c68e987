"""The counts every ingest job reports: read = written + quarantined."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class IngestSummary:
    """What one ingest run did, input by input (files or shards) and row by row."""

    #: what this job's inputs are called in :meth:`line`
    INPUTS: ClassVar[str] = "files"

    table: str
    run_id: str = ""
    inputs_seen: int = 0
    inputs_skipped: int = 0
    inputs_done: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One human line: what was ingested, skipped and quarantined, and how fast."""
        parts = [
            f"{self.table}: {self.inputs_done} of {self.inputs_seen} {self.INPUTS} ingested",
        ]
        if self.inputs_skipped:
            parts.append(f"{self.inputs_skipped} already ingested (skipped)")
        parts.append(
            f"{self.rows_read:,} rows read = {self.rows_written:,} written"
            f" + {self.rows_quarantined:,} quarantined"
        )
        parts.append(f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)")
        return ", ".join(parts)
