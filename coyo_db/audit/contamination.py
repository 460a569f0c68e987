"""Contamination audit: which dataset images copy an image of a registered reference set.

Three stages per batch of dataset images (the `images` table, read back from their shards):

1. **Candidates.** The copy descriptor (:mod:`coyo_db.ingest.models.copy_descriptors`) of each
   image is searched in a FAISS inner-product index holding every reference's descriptor and
   that of its mirror image (flip-aware); the :attr:`OperatingPoint.knn` nearest references at
   cosine >= :attr:`OperatingPoint.candidate_cosine` are candidates. So are references whose pHash
  lies
   within :attr:`OperatingPoint.candidate_radius` bits of the image's (a FAISS binary index;
   exact equality is COYO's own rule).
2. **Verification.** Every candidate pair is matched with local features (RootSIFT + RANSAC
   similarity transform, against the reference and its mirror image; :mod:`coyo_db.audit.verify`),
   giving inliers and the share of the reference they cover.
3. **Decision** at the default operating point (:data:`DEFAULT_POINT`), in this order of
   evidence: ``local`` (inliers >= ``min_inliers`` and coverage >= ``min_coverage``),
   ``phash_exact`` (equal pHash), ``descriptor`` (cosine >= ``descriptor_cosine``),
   ``phash_radius`` (Hamming <= ``phash_radius``). The pHash and descriptor rules are *loose*
   matching: they never fire for low-information images (reference or dataset side, see
   :func:`coyo_db.audit.refsets.low_information`), which match half the web.

Tables (a re-run for a refset replaces that refset's rows, others' stay):

- ``contamination``: the hits only, one row per (id, refset, ref_id): ``id, refset, ref_id,
  ref_path, method, score, hamming, cosine, inliers, coverage, flipped, shard, member, run_id``.
  ``score`` is the deciding evidence on a 0..1 scale: ``1 - hamming/64`` for pHash,
  the cosine for ``descriptor``, ``min(1, inliers / 100)`` for ``local``.
  ``hamming``, ``cosine`` and ``inliers`` are null where not computed.
- ``contamination_candidates``: every candidate pair with the same evidence, ``source``
  (``knn``, ``phash`` or both), ``low_info`` and ``hit``: thresholds can be re-chosen from it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.errors import CatalogError, InputError
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

log = logging.getLogger(__name__)

CONTAMINATION = "contamination"
CANDIDATES = "contamination_candidates"
IMAGES = "images"
METHODS = ("local", "phash_exact", "descriptor", "phash_radius")


@dataclass(frozen=True)
class OperatingPoint:
    """Thresholds of the audit; :data:`DEFAULT_POINT` is tuned on the planted-copy benchmark's
    dev split (see docs/audit.md)."""

    knn: int = 5
    candidate_cosine: float = 0.3
    candidate_radius: int = 12
    min_inliers: int = 10
    min_coverage: float = 0.05
    descriptor_cosine: float = 0.89
    phash_radius: int = 2


DEFAULT_POINT = OperatingPoint()

_EVIDENCE = [
    pa.field("id", pa.int64()),
    pa.field("refset", pa.string()),
    pa.field("ref_id", pa.int64()),
    pa.field("ref_path", pa.string()),
    pa.field("method", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("hamming", pa.int32()),
    pa.field("cosine", pa.float32()),
    pa.field("inliers", pa.int32()),
    pa.field("coverage", pa.float32()),
    pa.field("flipped", pa.bool_()),
    pa.field("shard", pa.string()),
    pa.field("member", pa.string()),
    pa.field("run_id", pa.string()),
]
CONTAMINATION_SCHEMA = pa.schema(_EVIDENCE)
CANDIDATES_SCHEMA = pa.schema(
    [
        *_EVIDENCE,
        pa.field("source", pa.string()),
        pa.field("low_info", pa.bool_()),
        pa.field("hit", pa.bool_()),
    ]
)
REMOVAL_SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("reason", pa.string())])


@dataclass
class AuditSummary:
    refsets: list[str]
    descriptor: str
    images: int = 0
    unreadable: int = 0
    candidates: int = 0
    hits: int = 0
    contaminated: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(
        default_factory=lambda: {"read+decode": 0.0, "describe": 0.0, "search": 0.0, "verify": 0.0}
    )
    run_id: str = ""

    def line(self) -> str:
        methods = ", ".join(f"{m} {n:,}" for m, n in sorted(self.by_method.items())) or "none"
        rate = self.images / self.seconds if self.seconds else 0.0
        return (
            f"audit {', '.join(self.refsets)}: {self.images:,} images, {self.candidates:,} "
            f"candidate pairs, {self.hits:,} hits on {self.contaminated:,} images ({methods}); "
            f"{self.unreadable:,} unreadable; {self.seconds:.1f}s ({rate:,.0f} images/s)"
        )


# --- references -----------------------------------------------------------------------------


@dataclass
class _References:
    """Every reference of the audited sets, concatenated, with its indexes."""

    refset: np.ndarray  # (N,) object
    ref_id: np.ndarray  # (N,) int64
    ref_path: np.ndarray  # (N,) object
    shard: list[str]
    member: list[str]
    phash: np.ndarray  # (N,) uint64
    low_info: np.ndarray  # (N,) bool
    index: Any = None  # faiss IndexFlatIP over 2N centred vectors: plain then mirrored
    binary: Any = None  # faiss IndexBinaryFlat over the N pHashes
    features: Any = None  # copy_verify.ReferenceFeatures
    raw: Any = None  # (2N, D) descriptors as stored, before centring
    center: Any = None  # (D,) the mean removed from every descriptor (see build_index)

    def build_index(self, first_queries: np.ndarray) -> None:
        """Centre on the mean of the references and the first dataset batch, then index.

        CNN descriptors share a large common component (unrelated photos score cosine 0.6-0.9);
        removing the mean of the images at hand spreads them out, so one threshold separates
        copies from unrelated images far better."""
        faiss = _faiss()
        self.center = np.concatenate([self.raw, first_queries]).mean(axis=0).astype(np.float32)
        index = faiss.IndexFlatIP(self.raw.shape[1])
        index.add(self.centre(self.raw))
        self.index = index

    def centre(self, vectors: np.ndarray) -> np.ndarray:
        out = np.asarray(vectors, dtype=np.float32) - self.center
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ref_id)


def _load_references(
    catalog: Catalog, names: Sequence[str], descriptor: CopyDescriptor
) -> _References:
    from coyo_db.audit import refsets
    from coyo_db.audit.verify import ReferenceFeatures

    parts, vectors = [], []
    for name in dict.fromkeys(names):
        images, both = refsets.load_refset(catalog, name, descriptor.name)
        if both.size == 0:
            log.info("describing refset %s with %s", name, descriptor.name)
            both = refsets.describe_refset(catalog, name, descriptor)
        parts.append(images)
        vectors.append(both)
    table = pa.concat_tables(parts)
    n = len(table)
    plain = np.concatenate([v[: len(v) // 2] for v in vectors])
    mirror = np.concatenate([v[len(v) // 2 :] for v in vectors])
    refs = _References(
        refset=np.asarray(table["refset"].to_pylist(), dtype=object),
        ref_id=table["ref_id"].to_numpy(),
        ref_path=np.asarray(table["ref_path"].to_pylist(), dtype=object),
        shard=table["shard"].to_pylist(),
        member=table["member"].to_pylist(),
        phash=table["phash"].to_numpy().astype(np.uint64),
        low_info=table["low_info"].to_numpy(zero_copy_only=False).astype(bool),
    )
    refs.raw = np.concatenate([plain, mirror])
    binary = _faiss().IndexBinaryFlat(64)
    binary.add(_phash_bytes(refs.phash))
    refs.binary = binary
    refs.features = ReferenceFeatures()
    log.info("audit index: %d references (%d low-information)", n, int(refs.low_info.sum()))
    return refs


def _faiss():  # type: ignore[no-untyped-def]
    from coyo_db.ingest.models.common import require

    return require("faiss", "faiss-cpu", "index")


def _phash_bytes(hashes: np.ndarray) -> np.ndarray:
    """uint64 pHashes as FAISS binary codes (8 bytes each, big-endian: bit order is irrelevant
    to Hamming distance as long as both sides agree)."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)


def _reference_greys(refs: _References, wanted: Sequence[int]) -> dict[int, np.ndarray | None]:
    """The references a batch must verify against whose features are not cached, read again
    from their shards as grey images (kept for this batch only: 50,000 would not fit)."""
    from coyo_db.audit.verify import grey_image
    from coyo_db.ingest.image_fetch import fetch_images

    missing = [
        i
        for i in dict.fromkeys(wanted)
        if (i, False) not in refs.features or (i, True) not in refs.features
    ]
    greys: dict[int, np.ndarray | None] = {}
    for fetched in fetch_images([(refs.shard[i], refs.member[i]) for i in missing]):
        i = missing[fetched.index]
        greys[i] = grey_image(fetched.data) if fetched.data else None
    return greys


# --- dataset images -------------------------------------------------------------------------


@dataclass
class _Batch:
    ids: np.ndarray
    shards: list[str]
    members: list[str]
    phash: np.ndarray  # uint64 (0 where unknown)
    has_phash: np.ndarray  # bool
    data: list[bytes | None]


def _catalog_batches(catalog: Catalog, batch_size: int, where: str | None) -> Iterator[_Batch]:
    from coyo_db.ingest.image_fetch import fetch_images

    if not catalog.has_table(IMAGES):
        raise CatalogError("the catalog has no images table; run `coyo-db ingest images` first")
    dataset = catalog.dataset(IMAGES)
    columns = ["id", "shard", "member", "phash"]
    scanner = dataset.scanner(columns=columns, filter=where, batch_size=batch_size)
    for record_batch in scanner.to_batches():
        if record_batch.num_rows == 0:
            continue
        shards = record_batch.column("shard").to_pylist()
        members = record_batch.column("member").to_pylist()
        data: list[bytes | None] = [None] * len(shards)
        for fetched in fetch_images(zip(shards, members, strict=True)):
            data[fetched.index] = fetched.data
        phash = record_batch.column("phash")
        yield _Batch(
            ids=record_batch.column("id").to_numpy(),
            shards=shards,
            members=members,
            phash=pc.fill_null(phash, 0).to_numpy().astype(np.uint64),
            has_phash=pc.is_valid(phash).to_numpy(zero_copy_only=False),
            data=data,
        )


def path_id(shard: str, member: str) -> int:
    """A stable 63-bit id for an image audited straight from a path."""
    digest = hashlib.blake2b(f"{shard}\0{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _path_batches(paths: Sequence[str | Path], batch_size: int) -> Iterator[_Batch]:
    from coyo_db.ingest.image_sources import find_shards

    records = (r for shard in find_shards(paths) for r in shard.records())
    while chunk := list(islice(records, batch_size)):
        ids = []
        for r in chunk:
            value = r.meta.get("id") if isinstance(r.meta, dict) else None
            ids.append(value if isinstance(value, int) else path_id(r.shard, r.member))
        yield _Batch(
            ids=np.asarray(ids, dtype=np.int64),
            shards=[r.shard for r in chunk],
            members=[r.member for r in chunk],
            phash=np.zeros(len(chunk), dtype=np.uint64),
            has_phash=np.zeros(len(chunk), dtype=bool),
            data=[r.data for r in chunk],
        )


# --- the audit ------------------------------------------------------------------------------


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
    progress: Progress | None = None,
) -> AuditSummary:
    """Audit the `images` table (or the shards under `paths`) against `refsets`; write the
    hits to `contamination` and every candidate to `contamination_candidates`, replacing
    these refsets' earlier rows. `where` filters `images` (a Lance/SQL predicate)."""
    from coyo_db.catalog.runs import Run
    from coyo_db.ingest.decode_pool import decode_workers, decoder_pool
    from coyo_db.ingest.models.copy_descriptors import load_descriptor

    if not refsets:
        raise InputError("name at least one reference set: --refset NAME")
    started = time.perf_counter()
    progress = progress or NullProgress()
    model = load_descriptor(descriptor)
    model.to(device)
    refs = _load_references(catalog, refsets, model)
    arguments = {"refsets": list(refsets), "descriptor": model.name, "point": asdict(point)}
    if paths:
        arguments["paths"] = [str(p) for p in paths]
    run = Run(catalog, "audit", arguments)
    summary = AuditSummary(list(dict.fromkeys(refsets)), model.name, run_id=run.run_id)
    total = None
    if not paths and catalog.has_table(IMAGES):
        total = catalog.dataset(IMAGES).count_rows(filter=where)
    progress.start("audit", total=total)
    batches = (
        _path_batches(paths, batch_size) if paths else _catalog_batches(catalog, batch_size, where)
    )
    parts = []
    status = "failed"
    count = decode_workers(workers, most=4)
    pool = decoder_pool(count)
    try:
        for batch in batches:
            parts.append(_audit_batch(batch, refs, model, point, count, pool, summary))
            summary.images += len(batch.ids)
            progress.advance(len(batch.ids))
        status = "ok"
    finally:
        pool.shutdown(cancel_futures=True)
        progress.finish()
        if status != "ok":
            run.finish(status, rows_read=summary.images)
    candidates = pa.concat_tables(parts) if parts else CANDIDATES_SCHEMA.empty_table()
    candidates = candidates.set_column(
        candidates.schema.get_field_index("run_id"),
        "run_id",
        pa.array([run.run_id] * len(candidates), pa.string()),
    )
    hits = candidates.filter(candidates["hit"]).select(CONTAMINATION_SCHEMA.names)
    _replace(catalog, CANDIDATES, CANDIDATES_SCHEMA, candidates, summary.refsets, run.run_id)
    _replace(catalog, CONTAMINATION, CONTAMINATION_SCHEMA, hits, summary.refsets, run.run_id)
    summary.candidates = len(candidates)
    summary.hits = len(hits)
    summary.contaminated = len(pc.unique(hits["id"])) if len(hits) else 0
    for method in hits["method"].to_pylist():
        summary.by_method[method] = summary.by_method.get(method, 0) + 1
    summary.seconds = time.perf_counter() - started
    run.finish("ok", rows_read=summary.images, rows_written=summary.hits)
    log.info("%s", summary.line())
    return summary


def _audit_batch(
    batch: _Batch,
    refs: _References,
    model: CopyDescriptor,
    point: OperatingPoint,
    workers: int,
    pool: Any,
    summary: AuditSummary,
) -> pa.Table:
    from coyo_db.audit.refsets import decode_stream, low_information
    from coyo_db.audit.verify import features, grey_image, verify
    from coyo_db.ingest.image_types import ImageRecord

    t0 = time.perf_counter()
    spec = model.preprocess
    records = [
        ImageRecord(s, m, m, d, error=None if d else "unreadable")
        for s, m, d in zip(batch.shards, batch.members, batch.data, strict=True)
    ]
    need_phash = not bool(batch.has_phash.all())
    decoded = list(decode_stream(records, [spec], workers=workers, phash=need_phash, pool=pool))
    ok = np.array([d.error is None for d in decoded], dtype=bool)
    summary.unreadable += int((~ok).sum())
    rows = np.flatnonzero(ok)
    phash = batch.phash.copy()
    if need_phash:
        for i in rows:
            if not batch.has_phash[i] and decoded[i].phash:
                phash[i] = int(decoded[i].phash, 16)
    empty = CANDIDATES_SCHEMA.empty_table()
    if len(rows) == 0:
        return empty
    pixels = np.stack([decoded[i].pixels[spec] for i in rows])
    query_low = np.array([low_information(p) is not None for p in pixels], dtype=bool)
    t1 = time.perf_counter()
    vectors = model.describe(pixels)
    if refs.index is None:
        refs.build_index(vectors)
    vectors = refs.centre(vectors)
    t2 = time.perf_counter()

    n = len(refs)
    k = min(point.knn * 2, 2 * n)
    sims, idx = refs.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    # pair -> evidence; the plain and mirrored entry of one reference fold into one pair
    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    for qi in range(len(rows)):
        seen = 0
        for sim, j in zip(sims[qi], idx[qi], strict=True):
            if j < 0 or seen >= point.knn:
                break
            ref, flipped = int(j % n), bool(j >= n)
            key = (qi, ref)
            if key in pairs:
                continue
            seen += 1
            if sim < point.candidate_cosine:
                continue
            pairs[key] = {"cosine": float(sim), "flip_hint": flipped, "source": "knn"}
    lims, dist, labels = refs.binary.range_search(
        _phash_bytes(phash[rows]), point.candidate_radius + 1
    )
    for qi in range(len(rows)):
        for pos in range(lims[qi], lims[qi + 1]):
            key = (qi, int(labels[pos]))
            entry = pairs.setdefault(key, {"source": "phash"})
            if entry["source"] == "knn":
                entry["source"] = "knn+phash"
            entry["hamming"] = int(dist[pos])
    t3 = time.perf_counter()
    if not pairs:
        summary.timings["read+decode"] += t1 - t0
        summary.timings["describe"] += t2 - t1
        summary.timings["search"] += t3 - t2
        return empty

    keys = sorted(pairs)
    q_index = np.array([q for q, _ in keys])
    r_index = np.array([r for _, r in keys])
    # cosines and Hamming distances for every pair, whichever stage found it
    plain_vecs = refs.index.reconstruct_batch(r_index.astype(np.int64))
    mirror_vecs = refs.index.reconstruct_batch((r_index + n).astype(np.int64))
    cos_plain = np.einsum("ij,ij->i", vectors[q_index], plain_vecs)
    cos_mirror = np.einsum("ij,ij->i", vectors[q_index], mirror_vecs)
    cosine = np.maximum(cos_plain, cos_mirror)
    flip_hint = cos_mirror > cos_plain
    hamming = np.bitwise_count(phash[rows][q_index] ^ refs.phash[r_index]).astype(np.int32)

    greys = _reference_greys(refs, r_index.tolist())
    cache = refs.features
    # the batch's reference features, pinned here: the shared LRU may drop them mid-batch
    pinned: dict[tuple[int, bool], Any] = {}
    for ri in set(r_index.tolist()):
        for side in (False, True):
            if (ri, side) in cache:
                pinned[(ri, side)] = cache.get(ri, None, side)

    def ref_features(ri: int, side: bool) -> Any:
        if (ri, side) not in pinned:
            pinned[(ri, side)] = cache.get(ri, greys.get(ri), side)
        return pinned[(ri, side)]

    query_features: dict[int, Any] = {}
    inliers = np.zeros(len(keys), dtype=np.int32)
    coverage = np.zeros(len(keys), dtype=np.float32)
    flipped = np.zeros(len(keys), dtype=bool)
    for p, (qi, ri) in enumerate(keys):
        if qi not in query_features:
            query_features[qi] = features(grey_image(batch.data[rows[qi]]))
        side = bool(flip_hint[p])  # try the orientation the descriptor prefers first
        best = verify(query_features[qi], ref_features(ri, side), None)
        if best.inliers < point.min_inliers:
            other = verify(query_features[qi], ref_features(ri, not side), None)
            if other.inliers > best.inliers:
                best, side = other, not side
        inliers[p], coverage[p] = best.inliers, best.coverage
        flipped[p] = side
    t4 = time.perf_counter()

    low = query_low[q_index] | refs.low_info[r_index]
    method, score = decide(hamming, cosine, inliers, coverage, low, point)
    sources = [pairs[key]["source"] for key in keys]
    dataset_rows = rows[q_index]
    table = pa.table(
        {
            "id": pa.array(batch.ids[dataset_rows], pa.int64()),
            "refset": pa.array(refs.refset[r_index].tolist(), pa.string()),
            "ref_id": pa.array(refs.ref_id[r_index], pa.int64()),
            "ref_path": pa.array(refs.ref_path[r_index].tolist(), pa.string()),
            "method": pa.array(method, pa.string()),
            "score": pa.array(score, pa.float32()),
            "hamming": pa.array(hamming, pa.int32()),
            "cosine": pa.array(cosine.astype(np.float32), pa.float32()),
            "inliers": pa.array(inliers, pa.int32()),
            "coverage": pa.array(coverage, pa.float32()),
            "flipped": pa.array(flipped, pa.bool_()),
            "shard": pa.array([batch.shards[i] for i in dataset_rows], pa.string()),
            "member": pa.array([batch.members[i] for i in dataset_rows], pa.string()),
            "run_id": pa.array([""] * len(keys), pa.string()),
            "source": pa.array(sources, pa.string()),
            "low_info": pa.array(low, pa.bool_()),
            "hit": pa.array([m is not None for m in method], pa.bool_()),
        },
        schema=CANDIDATES_SCHEMA,
    )
    summary.timings["read+decode"] += t1 - t0
    summary.timings["describe"] += t2 - t1
    summary.timings["search"] += t3 - t2
    summary.timings["verify"] += t4 - t3
    return table


def decide(
    hamming: np.ndarray,
    cosine: np.ndarray,
    inliers: np.ndarray,
    coverage: np.ndarray,
    low_info: np.ndarray,
    point: OperatingPoint = DEFAULT_POINT,
) -> tuple[list[str | None], np.ndarray]:
    """The method that makes each candidate pair a hit (None: not a hit) and its 0..1 score."""
    loose = ~np.asarray(low_info, dtype=bool)
    rules = [
        (
            "local",
            (inliers >= point.min_inliers) & (coverage >= point.min_coverage),
            np.minimum(1.0, inliers / 100.0),
        ),
        ("phash_exact", loose & (hamming == 0), 1.0 - hamming / 64.0),
        ("descriptor", loose & (cosine >= point.descriptor_cosine), cosine),
        ("phash_radius", loose & (hamming <= point.phash_radius), 1.0 - hamming / 64.0),
    ]
    method: list[str | None] = [None] * len(hamming)
    score = np.zeros(len(hamming), dtype=np.float32)
    decided = np.zeros(len(hamming), dtype=bool)
    for name, mask, value in rules:
        new = mask & ~decided
        for i in np.flatnonzero(new):
            method[i] = name
        score[new] = np.asarray(value, dtype=np.float32)[new] if np.ndim(value) else value
        decided |= new
    # pairs that are no hit keep their best evidence as the score
    rest = ~decided
    score[rest] = np.maximum(cosine[rest], np.minimum(1.0, inliers[rest] / 100.0))
    return method, score


def _replace(
    catalog: Catalog,
    name: str,
    schema: pa.Schema,
    rows: pa.Table,
    refsets: Sequence[str],
    run_id: str,
) -> None:
    """Replace the rows of `refsets` in table `name` with `rows`."""
    catalog.ensure_table(name, schema)
    quoted = ", ".join("'" + r.replace("'", "''") + "'" for r in refsets)
    catalog.dataset(name).delete(f"refset IN ({quoted})")
    if len(rows):
        catalog.append(name, rows.cast(schema), {"run_id": run_id})


# --- removal list ---------------------------------------------------------------------------


def contaminated_ids(catalog: Catalog) -> pa.Table:
    """One row per contaminated id with a reason naming its strongest hit."""
    if not catalog.has_table(CONTAMINATION):
        return REMOVAL_SCHEMA.empty_table()
    hits = catalog.dataset(CONTAMINATION).to_table(
        columns=["id", "refset", "ref_path", "method", "score", "hamming", "cosine", "inliers"]
    )
    if len(hits) == 0:
        return REMOVAL_SCHEMA.empty_table()
    order = pc.sort_indices(hits, [("id", "ascending"), ("score", "descending")])
    hits = hits.take(order)
    ids = hits["id"].to_numpy()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    best = hits.filter(pa.array(first))
    reasons = [
        f"copy of {r}:{p} ({m}{_evidence(h, c, i)})"
        for r, p, m, h, c, i in zip(
            best["refset"].to_pylist(),
            best["ref_path"].to_pylist(),
            best["method"].to_pylist(),
            best["hamming"].to_pylist(),
            best["cosine"].to_pylist(),
            best["inliers"].to_pylist(),
            strict=True,
        )
    ]
    return pa.table({"id": best["id"], "reason": pa.array(reasons, pa.string())}, REMOVAL_SCHEMA)


def _evidence(hamming: int | None, cosine: float | None, inliers: int | None) -> str:
    parts = []
    if inliers:
        parts.append(f"{inliers} inliers")
    if cosine is not None:
        parts.append(f"cosine {cosine:.3f}")
    if hamming is not None:
        parts.append(f"hamming {hamming}")
    return ": " + ", ".join(parts) if parts else ""


def write_removal_list(catalog: Catalog, path: str | Path) -> int:
    """Write the contaminated ids with their reason as Parquet; returns how many."""
    import pyarrow.parquet as pq

    table = contaminated_ids(catalog)
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    return len(table)
