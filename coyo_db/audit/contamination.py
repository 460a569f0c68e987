"""`coyo-db audit`: which dataset images copy an image of a registered reference set.

A job of the image-job runner (:mod:`coyo_db.ingest.image_job`). The units are the shards of
the `images` table (read back from where ingest found them), or the shards under `paths` for an
audit of raw shards (ids resolved as ingest resolves them, :mod:`coyo_db.ingest.image_ids`, so
the removal list names the ids those shards get when ingested). The stage describes each image
with the copy descriptor and flags low-information images (the reference sets' own stage,
:class:`coyo_db.audit.refset_job.DescribeStage`, without the mirror image); each batch's
candidates are then searched, verified and decided in this process
(:mod:`coyo_db.audit.candidates`, :mod:`coyo_db.audit.decision`).

Tables (a re-run for a refset replaces that refset's rows, others' stay):

- ``contamination``: the hits only, one row per (id, refset, ref_id): ``id, refset, ref_id,
  ref_path, method, score, hamming, cosine, inliers, coverage, flipped, shard, member, run_id``.
  ``score`` is the deciding evidence on a 0..1 scale: ``1 - hamming/64`` for pHash,
  the cosine for ``descriptor``, ``min(1, inliers / 100)`` for ``local``.
  ``hamming``, ``cosine`` and ``inliers`` are null where not computed.
- ``contamination_candidates``: every candidate pair with the same evidence, ``found_by``
  (``knn``, ``phash`` or both), ``low_info`` and ``hit``: thresholds can be re-chosen from it.

Both are written once, at the end of the audit, each in one commit that replaces the audited
refsets' rows: ``contamination_candidates`` first, then ``contamination``. A crash between the
two leaves the new candidates beside the old hits (and the run not recorded as ok); the audit
run again replaces both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.audit.candidates import DescribedBatch, match_batch
from coyo_db.audit.decision import DEFAULT_POINT, OperatingPoint
from coyo_db.audit.references import load_references
from coyo_db.audit.refset_job import describe_stage
from coyo_db.catalog import tables
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.catalog.readonly import where_select
from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.image_ids import IdResolver
from coyo_db.ingest.image_job import (
    DecodePlan,
    Engine,
    ImageJob,
    JobSummary,
    UnitWork,
)
from coyo_db.ingest.job_runner import run_image_job
from coyo_db.ingest.stored_images import StoredShard, shards_of

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage
    from coyo_db.progress import Progress


@dataclass
class AuditSummary(JobSummary):
    """What an audit found (rows are dataset images; quarantined ones were unreadable)."""

    refsets: list[str] = field(default_factory=list)
    descriptor: str = ""
    candidates: int = 0
    hits: int = 0
    contaminated: int = 0
    by_method: dict[str, int] = field(default_factory=dict)

    @property
    def images(self) -> int:
        return self.rows_read

    @property
    def unreadable(self) -> int:
        return self.rows_quarantined

    def line(self) -> str:
        methods = ", ".join(f"{m} {n:,}" for m, n in sorted(self.by_method.items())) or "none"
        rate = self.images / self.seconds if self.seconds else 0.0
        return (
            f"audit {', '.join(self.refsets)}: {self.images:,} images, {self.candidates:,} "
            f"candidate pairs, {self.hits:,} hits on {self.contaminated:,} images ({methods}); "
            f"{self.unreadable:,} unreadable; {self.seconds:.1f}s ({rate:,.0f} images/s)"
        )


@dataclass
class AuditShard(StoredShard):
    """A shard of `images` to audit, with the pHash ingest stored for each image."""

    phash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def phash_of(self, positions: np.ndarray) -> np.ndarray:
        return self.phash[positions]


def audit(
    catalog: Catalog,
    refsets: Sequence[str],
    *,
    descriptor: str = "effnet-lite0",
    paths: Sequence[str | Path] | None = None,
    where: str | None = None,
    point: OperatingPoint = DEFAULT_POINT,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> AuditSummary:
    """Audit the `images` table (or the shards under `paths`) against `refsets`; write the
    hits to `contamination` and every candidate to `contamination_candidates`, replacing
    these refsets' earlier rows. `where` filters `images`: one SQL condition over its columns
    (views allowed, as in ``id IN (SELECT id FROM pairs_filtered)``), run on a restricted
    connection (see :mod:`coyo_db.catalog.readonly`)."""
    if not refsets:
        raise InputError("name at least one reference set: --refset NAME")
    if not paths and not catalog.has_table(tables.IMAGES.name):
        raise CatalogError("the catalog has no images table; run `coyo-db ingest images` first")
    # the selection runs before any work, so that a refused --where leaves nothing behind
    selected = selected_images(catalog, where) if where is not None and not paths else None
    arguments: dict[str, Any] = {
        "refsets": list(refsets),
        "descriptor": descriptor,
        "point": asdict(point),
        "where": where,
        "device": device,
    }
    if paths:
        arguments["paths"] = [str(p) for p in paths]
    summary = AuditSummary(table=tables.CONTAMINATION.name, refsets=list(dict.fromkeys(refsets)))
    job = AuditJob(catalog, summary, arguments, descriptor, paths, selected, point, device)
    job.batch_size = batch_size
    job.workers = workers
    run_image_job(job, engine=engine, address=address, workers=workers, progress=progress)
    return summary


class AuditJob(ImageJob):
    """`audit` as a job definition: dataset images in, candidates and hits out."""

    command = "audit"
    workers: int | None = None

    def __init__(
        self,
        catalog: Catalog,
        summary: AuditSummary,
        arguments: dict[str, Any],
        descriptor: str,
        paths: Sequence[str | Path] | None,
        selected: tuple[int, pa.Array] | None,
        point: OperatingPoint,
        device: str,
    ) -> None:
        super().__init__(catalog, summary, arguments)
        self.spec, self.paths, self.point = descriptor, paths, point
        self.selected = selected  # (images version, ids) of --where; None audits every image
        self.requested_device = device
        self.parts: list[pa.Table] = []
        self.pending: list[DescribedBatch] = []
        self.ids = IdResolver(catalog)

    def prepare(self, engine: Engine) -> None:
        from coyo_db.ingest.models.copy_descriptors import load_descriptor

        self.model = load_descriptor(self.spec)
        device = engine.device(self.requested_device)
        self.model.to(device)  # the references are described here when they lack this model
        self.summary.descriptor = self.arguments["descriptor"] = self.model.name
        self.arguments["device"] = device
        self.refs = load_references(
            self.catalog, self.summary.refsets, self.model, workers=self.workers
        )
        self.stage = describe_stage(
            self.model, self.spec, engine, device, low_info=True, mirror=False
        )

    def plan(self) -> list[UnitWork]:
        spec = self.model.preprocess
        if self.paths:
            from coyo_db.ingest.image_shards import find_shards

            decode = DecodePlan((spec,), phash="exact", keep_bytes=True)
            return [UnitWork(shard, decode, self.stage) for shard in find_shards(self.paths)]
        version = self.selected[0] if self.selected is not None else None
        dataset = self.catalog.dataset(tables.IMAGES.name, version)
        images = dataset.to_table(columns=["id", "shard", "member", "phash"])
        if self.selected is not None:
            images = images.filter(pc.is_in(images["id"], self.selected[1]))
        decode = DecodePlan((spec,), phash=False, keep_bytes=True)
        # Shards in the order the table holds them (the order they were ingested in), as the
        # first batch centres the descriptors (see :mod:`.references`).
        names = images["shard"].to_numpy(zero_copy_only=False)
        shards, first_rows = np.unique(names.astype(str), return_index=True)
        order = dict(zip(shards.tolist(), first_rows.tolist(), strict=True))
        works = []
        for path, rows, _ in sorted(shards_of(images), key=lambda part: order[part[0]]):
            ids = rows["id"].to_numpy()
            hashes = pc.fill_null(rows["phash"], 0).to_numpy().astype(np.uint64)
            unit = AuditShard(path, ids, rows["member"].to_pylist(), len(ids), hashes)
            works.append(UnitWork(unit, decode, self.stage))
        return works

    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        records = [d.record for d in good]
        if isinstance(work.unit, AuditShard):
            positions = np.array([int(r.key) for r in records], dtype=np.int64)
            ids, phash = work.unit.ids[positions], work.unit.phash_of(positions)
        else:
            ids, _ = self.ids.resolve(records)
            phash = np.array([int(d.phash, 16) if d.phash else 0 for d in good], np.uint64)
        self.pending.append(
            DescribedBatch(
                ids=ids,
                shards=[r.shard for r in records],
                members=[r.member for r in records],
                phash=phash,
                data=[r.data for r in records],
                descriptors=outputs["descriptor"],
                low_info=np.array([r is not None for r in outputs["low_info_reason"]], bool),
            )
        )
        if sum(len(b.ids) for b in self.pending) >= self.batch_size:
            self._match()

    def _match(self) -> None:
        """Match what is pending as one batch: batches span shards, so the first one (which
        centres the descriptors, see :mod:`.references`) does not depend on shard sizes."""
        if self.pending:
            batch = DescribedBatch.concat(self.pending)
            self.pending = []
            self.parts.append(match_batch(batch, self.refs, self.point, self.summary.timings))

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        pass  # counted as unreadable; nothing to audit

    def commit(self, work: UnitWork) -> None:
        # The candidates are written once, by finish; the first shard is matched on its own
        # (its images centre the descriptors), later ones in batches that span shards.
        if not self.parts:
            self._match()

    def finish(self) -> None:
        self._match()
        self.ids.close()
        candidates = pa.concat_tables(self.parts) if self.parts else None
        if candidates is None:
            candidates = tables.CONTAMINATION_CANDIDATES.empty()
        candidates = candidates.set_column(
            candidates.schema.get_field_index("run_id"),
            "run_id",
            pa.array([self.run_id] * len(candidates), pa.string()),
        )
        hits = candidates.filter(candidates["hit"]).select(tables.CONTAMINATION.schema.names)
        replace_rows(
            self.catalog,
            tables.CONTAMINATION_CANDIDATES,
            candidates,
            self.summary.refsets,
            self.run_id,
        )
        replace_rows(self.catalog, tables.CONTAMINATION, hits, self.summary.refsets, self.run_id)
        summary: AuditSummary = self.summary  # type: ignore[assignment]
        summary.candidates = len(candidates)
        summary.hits = summary.rows_written = len(hits)
        summary.contaminated = len(pc.unique(hits["id"])) if len(hits) else 0
        for method in hits["method"].to_pylist():
            summary.by_method[method] = summary.by_method.get(method, 0) + 1


def selected_images(catalog: Catalog, where: str) -> tuple[int, pa.Array]:
    """The version of `images` and the ids of its rows that pass `where` (one SQL condition,
    run on a restricted connection: see :mod:`coyo_db.catalog.readonly`)."""
    name = tables.IMAGES.name
    version = catalog.dataset(name).version
    query = where_select(f"SELECT DISTINCT id FROM {name}", where)
    ids = catalog.sql(query, versions={name: version})["id"].combine_chunks()
    return version, ids.cast(pa.int64())


def replace_rows(
    catalog: Catalog, spec: tables.TableSpec, rows: pa.Table, refsets: Sequence[str], run_id: str
) -> None:
    """Replace the rows of `refsets` in table `spec` with `rows`, in one commit."""
    quoted = ", ".join(sql_string(r) for r in refsets)
    catalog.replace(spec.name, f"refset IN ({quoted})", rows.cast(spec.schema), {"run_id": run_id})
