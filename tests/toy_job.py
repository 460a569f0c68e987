"""A small image job for the runner's own tests: each image's mean colour, one commit per shard.

No model, so the runner's guarantees (each row once after a kill, quarantine counted, both
engines alike) are tested apart from any job of the product. Run as a script it runs the job
over the shards named on its command line and, with ``--die-after N``, dies like kill -9
(``os._exit``) right after its N-th commit.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from coyo_db.catalog import Catalog, lance_tables
from coyo_db.catalog.ledger import Ledger, LedgerEntry
from coyo_db.ingest.image_job import (
    DecodePlan,
    ImageJob,
    JobSummary,
    StageSpec,
    UnitWork,
)
from coyo_db.ingest.image_shards import find_shards
from coyo_db.ingest.image_types import Preprocess

TABLE = "mean_colours"
SCHEMA = pa.schema(
    [
        pa.field("member", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("red", pa.float32()),
        pa.field("green", pa.float32()),
        pa.field("blue", pa.float32()),
    ]
)
SPEC = Preprocess(32, "squash")


class MeanColour:
    """The stage: the mean colour of each image's 32x32 pixels."""

    def __init__(self, device: str = "cpu", threads: int = 0) -> None:
        self.device = device

    def __call__(self, pixels: dict, texts: list[str | None]) -> dict[str, np.ndarray]:
        return {"mean": pixels[SPEC].reshape(len(texts), -1, 3).mean(axis=1).astype(np.float32)}


@dataclass
class Rows:
    parts: list[pa.Table] = field(default_factory=list)
    bad: int = 0


class MeanColourJob(ImageJob):
    command = "toy mean colours"

    def __init__(self, catalog: Catalog, paths: list[str], die_after: int | None = None):
        super().__init__(catalog, JobSummary(table=TABLE), {"paths": paths})
        self.paths, self.die_after, self.commits = paths, die_after, 0
        self.batch_size = 4

    def prepare(self, engine: Any) -> None:
        catalog = self.catalog
        catalog.ensure_table(TABLE, SCHEMA)
        self.ledger = Ledger(catalog, TABLE)
        built = MeanColour() if engine.name == "local" else None
        self.stage = StageSpec(MeanColour, {"device": "cpu"}, key="mean", built=built)

    def plan(self) -> list[UnitWork]:
        works = []
        for shard in find_shards(self.paths):
            if self.ledger.done(shard.fingerprint) is not None:
                self.summary.inputs_skipped += 1
                continue
            works.append(UnitWork(shard, DecodePlan((SPEC,)), self.stage, Rows()))
        return works

    def collect(self, work: UnitWork, good: list, outputs: dict[str, Any]) -> None:
        mean = outputs["mean"]
        work.state.parts.append(
            pa.table(
                {
                    "member": [d.record.member for d in good],
                    "shard": [d.record.shard for d in good],
                    "red": mean[:, 0],
                    "green": mean[:, 1],
                    "blue": mean[:, 2],
                },
                schema=SCHEMA,
            )
        )

    def reject(self, work: UnitWork, bad: list) -> None:
        work.state.bad += len(bad)

    def commit(self, work: UnitWork) -> None:
        batches = [b for part in work.state.parts for b in part.to_batches()]
        written = sum(b.num_rows for b in batches)
        staged = lance_tables.stage(self.catalog.table_uri(TABLE), batches, SCHEMA)
        record = LedgerEntry(
            str(work.unit.path), work.unit.fingerprint, written + work.state.bad, written, 0
        )
        self.ledger.commit_input(staged, record, self.run_id)
        self.summary.rows_written += written
        self.commits += 1
        if self.die_after is not None and self.commits >= self.die_after:
            os._exit(9)  # as kill -9 would: no cleanup, no runs row update


if __name__ == "__main__":
    from coyo_db.ingest.job_runner import run_image_job

    args = sys.argv[1:]
    die = None
    if args[0] == "--die-after":
        die, args = int(args[1]), args[2:]
    home, paths = args[0], args[1:]
    run_image_job(MeanColourJob(Catalog(home, create=True), paths, die), workers=1)
