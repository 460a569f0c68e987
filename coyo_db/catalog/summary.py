"""The counts every ingest job reports: read = written + quarantined."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IngestSummary:
    """What one ingest run did, source by source and row by row."""

    table: str
    run_id: str = ""
    sources_seen: int = 0
    sources_skipped: int = 0
    sources_ingested: int = 0
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
            f"{self.table}: {self.sources_ingested} of {self.sources_seen} sources ingested",
        ]
        if self.sources_skipped:
            parts.append(f"{self.sources_skipped} already ingested (skipped)")
        parts.append(
            f"{self.rows_read:,} rows read = {self.rows_written:,} written"
            f" + {self.rows_quarantined:,} quarantined"
        )
        parts.append(f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)")
        return ", ".join(parts)
