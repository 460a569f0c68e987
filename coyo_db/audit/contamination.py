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
  ref_path, method, score, hamming, cosine, inliers, coverage, flipped, shard, member, run_id,
  ref_group``. ``score`` is the deciding evidence on a 0..1 scale: ``1 - hamming/64`` for
  pHash, the cosine for ``descriptor``, ``min(1, inliers / 100)`` for ``local``, the
  similarity for ``layout``. ``inliers`` and ``coverage`` are null where no verification ran.
- ``contamination_candidates``: every candidate pair with the same evidence, ``found_by``
  (``knn``, ``phash`` or both), ``low_info``, ``hit`` and ``layout``: thresholds can be
  re-chosen from it.

Commits: each unit's candidates are committed with its `ledger` row (one Lance commit, as
ingest commits an input), so a killed audit resumes with the units it had not finished. A unit
is known by its content and the audit's *key*: the descriptor, the operating point, each
audited set as registered, and every unit of the plan; the same audit run again finds its
units done. At the end, candidates of the audited sets that this audit did not write are
deleted (one commit), then the sets' rows of ``contamination`` are replaced by the hits among
the candidates (one commit): ``contamination``, which exports read, holds the old hits or the
new ones, never a mix; ``contamination_candidates`` holds, while an audit runs, the earlier
rows beside the new.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from coyo_db.audit.audit_history import (
    audit_runs,
    finish_entry,
    finish_properties,
    unit_prefix,
    units_still_held,
)
from coyo_db.audit.candidates import DescribedBatch, match_batch
from coyo_db.audit.decision import DEFAULT_POINT, OperatingPoint
from coyo_db.audit.references import load_references
from coyo_db.audit.refset_job import describe_stage
from coyo_db.audit.refsets import list_refsets
from coyo_db.catalog import lance_tables, tables
from coyo_db.catalog.id_keys import IdKeys
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.catalog.ledger import Ledger, LedgerEntry
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
from coyo_db.ingest.image_outputs import vectors as float16_vectors
from coyo_db.ingest.job_runner import run_image_job
from coyo_db.ingest.stored_images import StoredShard, shards_of

# Bumped when the rules change what an audit finds, or what its ledger rows mean: earlier
# results are then not reused (4: finishes recorded in the ledger, see audit_history).
AUDIT_RULES = 4

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor
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


@dataclass
class DescribedShard(AuditShard):
    """A shard of `images` whose images all have a stored descriptor: nothing to decode; the
    images that need verifying are read when they do."""

    def records(self) -> Iterator[ImageRecord]:
        return iter(())

    def count(self) -> int:
        return 0


class DescriptorStore:
    """The `descriptors__<model>` table: each audited image's descriptor, written once."""

    def __init__(self, catalog: Catalog, model: CopyDescriptor) -> None:
        self.catalog = catalog
        self.spec = tables.descriptors(model.name, model.dim)
        catalog.ensure(self.spec)
        self.keys = IdKeys(catalog, self.spec.name)

    def all_stored(self, ids: np.ndarray) -> bool:
        return bool(len(ids)) and bool(self.keys.present(ids).all())

    def read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors (N, D) float32, low-information (N,) bool) of `ids`, in their order."""
        table = self.catalog.dataset(self.spec.name).to_table(
            filter=pc.field("id").isin(pa.array(ids, pa.int64()))
        )
        where = {int(i): k for k, i in enumerate(table["id"].to_pylist())}
        order = np.array([where[int(i)] for i in ids], dtype=np.int64)
        dim = self.spec.schema.field("descriptor").type.list_size
        values = table["descriptor"].combine_chunks().values.to_numpy(zero_copy_only=False)
        vectors = values.reshape(-1, dim)[order].astype(np.float32)
        low = table["low_info_reason"].is_valid().to_numpy(zero_copy_only=False)[order]
        return vectors, low.astype(bool)

    def write(self, ids: np.ndarray, vectors: np.ndarray, reasons: list[str | None]) -> None:
        """Store the descriptors of the `ids` the table does not hold yet (one commit)."""
        fresh = ~self.keys.present(ids)
        if not fresh.any():
            return
        ids = ids[fresh]
        rows = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "descriptor": float16_vectors(vectors[fresh]),
                "low_info_reason": pa.array(
                    [r for r, keep in zip(reasons, fresh, strict=True) if keep], pa.string()
                ),
            },
            schema=self.spec.schema,
        )
        self.keys.add(ids)
        self.catalog.append(self.spec.name, rows)
        self.keys.committed()

    def close(self) -> None:
        self.keys.close()


@dataclass
class UnitAudit:
    """What one unit gathered until its commit: its candidate rows and its counts."""

    fingerprint: str
    rows: list[pa.Table] = field(default_factory=list)
    read: int = 0
    unreadable: int = 0
    described: list[tuple[np.ndarray, np.ndarray, list]] = field(default_factory=list)


class AuditJob(ImageJob):
    """`audit` as a job definition: dataset images in, candidates committed per unit, hits
    written at the end."""

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
        self.ids = IdResolver(catalog)
        self.key = ""

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
        self.stage = describe_stage(self.model, self.spec, engine, device, low_info=True)
        self.catalog.ensure(tables.CONTAMINATION_CANDIDATES)
        self.catalog.ensure(tables.CONTAMINATION)  # readers find it, empty, from the start
        # the images of `images` keep their descriptors for the next audit
        self.store = None if self.paths else DescriptorStore(self.catalog, self.model)
        self.ledger = Ledger(self.catalog, tables.CONTAMINATION_CANDIDATES.name)

    def plan(self) -> list[UnitWork]:
        works = self._units()
        self.key = audit_key(self.catalog, self.summary.refsets, self.model.name, self.point, works)
        self.arguments["audit_key"] = self.key
        todo, held = [], units_still_held(self.ledger, self.key, self.summary.refsets)
        for work in works:
            work.state = state = UnitAudit(unit_fingerprint(self.key, work.unit))
            if state.fingerprint not in held:
                unit = work.unit
                if self.store is not None and self.store.all_stored(unit.ids):
                    work.unit = DescribedShard(
                        unit.path, unit.ids, unit.members, unit.total, unit.phash
                    )
                todo.append(work)
            else:
                self.summary.inputs_skipped += 1
        return todo

    def _units(self) -> list[UnitWork]:
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
        works = []
        for path, rows, _ in sorted(shards_of(images), key=lambda part: part[0]):
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
        # matched as stored (float16), so that a later audit reading them finds the same
        vectors = np.asarray(outputs["descriptor"], np.float16)
        reasons = list(outputs["low_info_reason"])
        batch = DescribedBatch(
            ids=ids,
            shards=[r.shard for r in records],
            members=[r.member for r in records],
            phash=phash,
            data=[r.data for r in records],
            descriptors=vectors.astype(np.float32),
            low_info=np.array([r is not None for r in reasons], bool),
        )
        state: UnitAudit = work.state
        state.rows.append(match_batch(batch, self.refs, self.point, self.summary.timings))
        state.read += len(good)
        if self.store is not None:
            state.described.append((ids, vectors, reasons))

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        state: UnitAudit = work.state
        state.read += len(bad)
        state.unreadable += len(bad)

    def commit(self, work: UnitWork) -> None:
        """The unit's candidates and its ledger row, in one commit (its images' descriptors
        stored before)."""
        state: UnitAudit = work.state
        if isinstance(work.unit, DescribedShard):
            self._match_stored(work.unit, state)
        if self.store is not None and state.described:
            ids, vectors, reasons = zip(*state.described, strict=True)
            self.store.write(
                np.concatenate(ids), np.concatenate(vectors), [r for part in reasons for r in part]
            )
            state.described = []
        spec = tables.CONTAMINATION_CANDIDATES
        rows = pa.concat_tables(state.rows) if state.rows else spec.empty()
        rows = rows.set_column(
            rows.schema.get_field_index("run_id"),
            "run_id",
            pa.array([self.run_id] * len(rows), pa.string()),
        )
        uri = self.catalog.table_uri(spec.name)
        transaction = lance_tables.stage(uri, rows.to_batches(), spec.schema)
        entry = LedgerEntry(
            str(getattr(work.unit, "path", work.unit)),
            state.fingerprint,
            state.read,
            len(rows),
            state.unreadable,
        )
        self.ledger.commit_input(transaction, entry, self.run_id)
        state.rows = []

    def _match_stored(self, unit: DescribedShard, state: UnitAudit) -> None:
        """Match a unit's images from their stored descriptors, a batch at a time."""
        assert self.store is not None
        started = time.perf_counter()
        vectors, low = self.store.read(unit.ids)
        self.summary.timings["read descriptors"] = (
            self.summary.timings.get("read descriptors", 0.0) + time.perf_counter() - started
        )
        for start in range(0, len(unit.ids), self.batch_size):
            part = slice(start, start + self.batch_size)
            n = len(unit.ids[part])
            batch = DescribedBatch(
                ids=unit.ids[part],
                shards=[unit.path] * n,
                members=unit.members[part],
                phash=unit.phash[part],
                data=[None] * n,
                descriptors=vectors[part],
                low_info=low[part],
            )
            state.rows.append(match_batch(batch, self.refs, self.point, self.summary.timings))
        state.read += len(unit.ids)
        self.summary.rows_read += len(unit.ids)

    def finish(self) -> None:
        """Drop the audited sets' candidates this audit did not write, then replace their
        hits with the hits among the candidates; count what the audit found."""
        self.ids.close()
        if self.store is not None:
            self.store.close()
        spec, refsets = tables.CONTAMINATION_CANDIDATES, self.summary.refsets
        in_sets = f"refset IN ({', '.join(sql_string(r) for r in refsets)})"
        runs = ", ".join(sql_string(r) for r in audit_runs(self.catalog, self.key))
        stale = f"{in_sets} AND run_id NOT IN ({runs})" if runs else in_sets
        entry = finish_entry(self.run_id, self.key, refsets)
        properties = finish_properties(entry, self.run_id, self.key)
        before = self.catalog.dataset(spec.name).version
        after = self.catalog.replace(spec.name, stale, spec.empty(), properties).version
        if after != before:  # it deleted candidates: other audits' units must know
            self.ledger.record_commit(entry, after, self.run_id)
        candidates = self.catalog.dataset(spec.name)
        hits = candidates.scanner(
            columns=tables.CONTAMINATION.schema.names, filter=f"{in_sets} AND hit"
        ).to_batches()
        lance_tables.replace(
            self.catalog.table_uri(tables.CONTAMINATION.name),
            in_sets,
            hits,
            tables.CONTAMINATION.schema,
            properties,
        )
        summary: AuditSummary = self.summary  # type: ignore[assignment]
        summary.candidates = candidates.count_rows(filter=in_sets)
        found = self.catalog.dataset(tables.CONTAMINATION.name).to_table(
            columns=["id", "method"], filter=in_sets
        )
        summary.hits = summary.rows_written = len(found)
        summary.contaminated = len(pc.unique(found["id"])) if len(found) else 0
        for method in found["method"].to_pylist():
            summary.by_method[method] = summary.by_method.get(method, 0) + 1


def audit_key(
    catalog: Catalog,
    refsets: Sequence[str],
    descriptor: str,
    point: OperatingPoint,
    works: Sequence[UnitWork],
) -> str:
    """What makes two audits the same audit: the rules, the descriptor, the operating point,
    each set as registered (a set registered again is another set), and the units' content."""
    registered = {
        row["refset"]: (str(row["created_at"]), row["images"], row["descriptor"])
        for row in list_refsets(catalog).to_pylist()
    }
    digest = xxhash.xxh3_128()
    what = {
        "rules": AUDIT_RULES,
        "descriptor": descriptor,
        "point": asdict(point),
        "refsets": [(name, registered.get(name)) for name in refsets],
    }
    digest.update(json.dumps(what, sort_keys=True, default=str).encode())
    for work in works:
        digest.update(unit_hash(work.unit).encode())
    return digest.hexdigest()[:24]


def unit_hash(unit: Any) -> str:
    """A unit's content: a shard's fingerprint, or the images of `images` it stands for."""
    if isinstance(unit, AuditShard):
        digest = xxhash.xxh3_128(unit.path.encode("utf-8", "surrogateescape"))
        digest.update(np.ascontiguousarray(unit.ids, np.int64).tobytes())
        digest.update(np.ascontiguousarray(unit.phash, np.uint64).tobytes())
        digest.update("\n".join(unit.members).encode("utf-8", "surrogateescape"))
        return digest.hexdigest()
    return str(unit.fingerprint)


def unit_fingerprint(key: str, unit: Any) -> str:
    """The ledger's name for `unit` audited under `key`."""
    return f"{unit_prefix(key)}{unit_hash(unit)}"


def selected_images(catalog: Catalog, where: str) -> tuple[int, pa.Array]:
    """The version of `images` and the ids of its rows that pass `where` (one SQL condition,
    run on a restricted connection: see :mod:`coyo_db.catalog.readonly`)."""
    name = tables.IMAGES.name
    version = catalog.dataset(name).version
    query = where_select(f"SELECT DISTINCT id FROM {name}", where)
    ids = catalog.sql(query, versions={name: version})["id"].combine_chunks()
    return version, ids.cast(pa.int64())
