"""`coyo-db label`: COYO-Labeled-style top-k labels for the ingested images, from a model.

images table (shard, member) -> image bytes read back (:func:`fetch_images`, one pass per
shard) -> decode in worker processes -> batches -> labeler on the device -> top-k taxonomy
classes -> `labels` rows (id, taxonomy, source = the model spec, labels, label_probs), the same
format COYO-Labeled-300M is ingested in, so every label view and macro works on both.

Per-batch work is one function, :func:`label_decoded` (or :func:`label_batch` from encoded
bytes). ``engine="ray"`` runs the read, decode and model on Ray Data instead
(:mod:`coyo_db.labels.labeling_ray`) and commits each shard with the same code, so both
engines write
the same rows.

Resumable per shard of `images`: each shard's labels are one Lance commit whose fingerprint
(model, taxonomy, shard, the shard's ids) goes to the ledger of `labels`; a re-run skips the
shards it finished, a killed run leaves every row once, and images already labeled by the same
model and taxonomy (an earlier run with another --top-k) are not labeled again. Images that
cannot be read back or decoded go to `quarantine` with the reason: read = written + quarantined.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import lance_tables, schemas
from coyo_db.catalog.ledger import SourceLedger, SourceRecord, quarantine_rows
from coyo_db.catalog.runs import Run
from coyo_db.catalog.summary import IngestSummary
from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.decode_pool import decode_workers, decoder_pool
from coyo_db.ingest.ray_engine import check_engine
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_fetch import FetchedImage
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord
    from coyo_db.ingest.models.classifiers import Labeler

log = logging.getLogger(__name__)

LABELS = "labels"
IMAGES = "images"
DEFAULT_TOP_K = 50  # COYO-Labeled-300M keeps the top 50
DEFAULT_BATCH_SIZE = 64
_CHUNK = 16  # records per decode task


@dataclass
class LabelSummary(IngestSummary):
    """The usual counts (sources are shards of `images`, rows are images) and the time split."""

    model: str = ""
    taxonomy: str = ""
    top_k: int = 0
    already_labeled: int = 0  # images of unfinished shards that this model had labeled before
    timings: dict[str, float] = field(
        default_factory=lambda: {"read+decode": 0.0, "infer": 0.0, "write": 0.0}
    )

    def line(self) -> str:
        text = (
            f"labels ({self.model} over {self.taxonomy}, top-{self.top_k}): "
            f"{self.sources_ingested} of {self.sources_seen} shards labeled"
        )
        if self.sources_skipped:
            text += f", {self.sources_skipped} done before (skipped)"
        text += (
            f", {self.rows_read:,} images read = {self.rows_written:,} labeled"
            f" + {self.rows_quarantined:,} quarantined"
            f", {self.seconds:.1f} s ({self.rows_per_second:,.1f} images/s)"
        )
        busy = sum(self.timings.values())
        if busy > 0:
            text += "; time in " + ", ".join(f"{k} {v / busy:.0%}" for k, v in self.timings.items())
        return text


@dataclass
class LabeledBatch:
    """What one batch gave: `labels` rows and the images that could not be labeled."""

    labels: pa.RecordBatch
    bad_ids: np.ndarray  # int64
    bad_reasons: list[str]


def labels_batch(
    ids: np.ndarray, indices: np.ndarray, probs: np.ndarray, taxonomy: str, source: str
) -> pa.RecordBatch:
    """(N,) ids and (N, k) indices / probabilities as rows of :data:`schemas.LABELS`."""
    n, k = indices.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(np.asarray(ids, np.int64)),
            pa.repeat(pa.scalar(taxonomy, pa.string()), n),
            pa.repeat(pa.scalar(source, pa.string()), n),
            pa.ListArray.from_arrays(offsets, pa.array(indices.astype(np.int32).ravel())),
            pa.ListArray.from_arrays(offsets, pa.array(probs.astype(np.float32).ravel())),
        ],
        schema=schemas.LABELS,
    )


def label_decoded(
    labeler: Labeler,
    ids: np.ndarray,
    decoded: Sequence[DecodedImage],
    *,
    top_k: int,
    taxonomy: str,
) -> LabeledBatch:
    """Label a batch of decoded images (`ids[i]` is `decoded[i]`'s id): the per-batch unit.

    Images that failed to read or decode come back in `bad_ids` / `bad_reasons`.
    """
    ids = np.asarray(ids, np.int64)
    reasons = [d.record.error or d.error for d in decoded]
    good = np.array([r is None for r in reasons], dtype=bool)
    if good.any():
        spec = labeler.preprocess
        pixels = np.stack([d.pixels[spec] for d, ok in zip(decoded, good, strict=True) if ok])
        indices, probs = labeler.top_k(pixels, top_k)
        rows = labels_batch(ids[good], indices, probs, taxonomy, labeler.name)
    else:
        rows = pa.RecordBatch.from_pylist([], schema=schemas.LABELS)
    bad = [r for r in reasons if r is not None]
    return LabeledBatch(rows, ids[~good], bad)  # type: ignore[arg-type]


def label_batch(
    labeler: Labeler,
    ids: np.ndarray,
    images: Sequence[bytes | None],
    *,
    top_k: int,
    taxonomy: str,
    errors: Sequence[str | None] | None = None,
    max_pixels: int | None = None,
) -> LabeledBatch:
    """Decode encoded images in this process, then :func:`label_decoded` them.

    `errors[i]`, when given, is why image i could not be read (its bytes are then None)."""
    from coyo_db.ingest.decode import DEFAULT_MAX_PIXELS, decode_batch
    from coyo_db.ingest.image_types import ImageRecord

    records = [
        ImageRecord("", "", str(i), data, error=errors[i] if errors else None)
        for i, data in enumerate(images)
    ]
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    decoded = decode_batch(records, [labeler.preprocess], phash=False, max_pixels=limit)
    return label_decoded(labeler, ids, decoded, top_k=top_k, taxonomy=taxonomy)


def label_images(
    catalog: Catalog,
    model: str,
    taxonomy: str = "imagenet-21k",
    *,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    workers: int | None = None,
    classes: str | None = None,
    templates: str | None = None,
    activation: str = "softmax",
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> LabelSummary:
    """Label every image of the `images` table with `model` over `taxonomy` into `labels`.

    `model`: ``effnet-lite0``, ``timm:ARCH:/checkpoint`` (with `classes`, a class file, when its
    outputs are not one of timm's ImageNet lists) or ``open_clip:ARCH:WEIGHTS`` (zero-shot over
    the class names with `templates`). `taxonomy`: ``imagenet-21k``, ``imagenet-1k``, a
    taxonomy added with ``coyo-db taxonomy add``, or a class-list file. `workers` decode
    processes (default: one per core; 0 decodes in this process).

    `engine` is "local" or "ray": Ray Data reads and decodes on the cluster's CPUs and runs
    the labeler in an actor pool (one GPU each where the cluster has GPUs); this process
    commits each shard through the same ledger, so `labels` gets the same rows and resume
    works alike. `address` joins a running Ray cluster; without it a local Ray instance
    starts. The shards (and a --classes file) must be readable on every node.
    """
    from coyo_db.ingest.models.classifiers import load_labeler
    from coyo_db.ingest.models.common import resolve_device
    from coyo_db.labels.taxonomy import resolve_taxonomy

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    check_engine(engine, address)
    if not catalog.has_table(IMAGES):
        raise CatalogError(
            f"the catalog at {catalog.home} has no images to label; run 'coyo-db ingest images'"
        )
    started = time.perf_counter()
    progress = progress or NullProgress()
    name, classes_table = resolve_taxonomy(catalog, taxonomy)
    ray_session: AbstractContextManager[Any] = nullcontext()
    if engine == "ray":
        from coyo_db.labels import labeling_ray

        ray_session = labeling_ray.session(address)
    with ray_session:
        labeler = load_labeler(
            model,
            name,
            classes_table,
            classes=classes,
            templates=templates,
            activation=activation,  # type: ignore[arg-type]
            cache_dir=catalog.home / "cache" / "zeroshot",
        )
        if engine == "ray":  # the actors load their own copies on their devices
            device = labeling_ray.cluster_device(device)
            labeler_kwargs = {
                "model": model,
                "taxonomy_name": name,
                "taxonomy": classes_table,
                "classes": classes,
                "templates": templates,
                "activation": activation,
                "class_embeddings": (
                    labeler.class_embeddings() if hasattr(labeler, "class_embeddings") else None
                ),
            }
        else:
            labeler.to(resolve_device(device))
            device, labeler_kwargs = labeler.device, {}
        return _label(
            catalog,
            labeler,
            name,
            classes_table,
            device,
            labeler_kwargs,
            top_k=top_k,
            batch_size=batch_size,
            workers=workers,
            arguments={
                "model": model,
                "taxonomy": name,
                "top_k": top_k,
                "batch_size": batch_size,
                "device": device,
                "classes": classes,
                "templates": templates,
                "activation": activation,
                "engine": engine,
            },
            progress=progress,
            started=started,
        )


def _label(
    catalog: Catalog,
    labeler: Labeler,
    name: str,
    classes_table: pa.Table,
    device: str,
    labeler_kwargs: dict[str, Any],
    *,
    top_k: int,
    batch_size: int,
    workers: int | None,
    arguments: dict[str, Any],
    progress: Progress,
    started: float,
) -> LabelSummary:
    from coyo_db.labels.hierarchy import ensure_hierarchy

    if classes_table.column("wnid").null_count < classes_table.num_rows:
        ensure_hierarchy(catalog)  # synsets: selection by hierarchy works at once
    catalog.ensure_table(LABELS, schemas.LABELS)

    run = Run(catalog, "label", arguments)
    summary = LabelSummary(table=LABELS, run_id=run.run_id, model=labeler.name, taxonomy=name)
    summary.top_k = top_k
    job = _Job(
        catalog, labeler, name, top_k, batch_size, decode_workers(workers), summary, progress
    )
    with run.recorded(summary, progress, started):
        if arguments["engine"] == "ray":
            job.run_ray(device, labeler_kwargs)
        else:
            job.run()
    log.info("%s", summary.line())
    return summary


def shard_fingerprint(model: str, taxonomy: str, shard: str, ids: np.ndarray) -> str:
    """The ledger key of one shard's labels: the model, taxonomy, shard and its sorted ids."""
    digest = hashlib.sha256(f"label\0{model}\0{taxonomy}\0{shard}\0".encode())
    digest.update(np.sort(np.asarray(ids, np.int64)).tobytes())
    return digest.hexdigest()[:32]


@dataclass
class _Shard:
    path: str
    fingerprint: str
    ids: np.ndarray  # the images still to label, in member order
    members: list[str]
    total: int  # images of the shard


class _Job:
    def __init__(
        self,
        catalog: Catalog,
        labeler: Labeler,
        taxonomy: str,
        top_k: int,
        batch_size: int,
        workers: int,
        summary: LabelSummary,
        progress: Progress,
    ) -> None:
        self.catalog = catalog
        self.labeler = labeler
        self.taxonomy = taxonomy
        self.top_k = top_k
        self.batch_size = batch_size
        self.workers = workers
        self.summary = summary
        self.progress = progress
        self.ledger = SourceLedger(catalog, LABELS)

    def run(self) -> None:
        shards = self._start()
        todo = [s for s in shards if s is not None and len(s.ids)]
        with decoder_pool(self.workers if todo else 0) as pool:
            for shard in shards:
                if shard is not None:
                    self._shard(shard, pool)

    def run_ray(self, device: str, labeler_kwargs: dict[str, Any]) -> None:
        """Read, decode and label on Ray; each shard committed here by :meth:`commit`."""
        from coyo_db.labels import labeling_ray

        pending = [s for s in self._start() if s is not None]
        labeling_ray.run(self, pending, device, labeler_kwargs)

    def _start(self) -> list[_Shard | None]:
        shards = self._plan()
        self.summary.sources_seen = len(shards)
        self.summary.sources_skipped = sum(s is None for s in shards)
        todo = [s for s in shards if s is not None and len(s.ids)]
        self.progress.start("label images", total=sum(len(s.ids) for s in todo))
        return shards

    def _plan(self) -> list[_Shard | None]:
        """One entry per shard of `images` in shard order: None for a shard already done."""
        images = self.catalog.dataset(IMAGES).to_table(columns=["id", "shard", "member"])
        images = images.filter(pc.is_valid(images["id"])).sort_by(
            [("shard", "ascending"), ("member", "ascending")]
        )
        ids = images["id"].to_numpy()
        # Each id once (the first member that has it), and not again if already labeled.
        _, first = np.unique(ids, return_index=True)
        keep = np.zeros(len(ids), dtype=bool)
        keep[first] = True
        labeled = self.catalog.dataset(LABELS).to_table(
            columns=["id"],
            filter=(pc.field("taxonomy") == self.taxonomy)
            & (pc.field("source") == self.labeler.name),
        )
        before = np.isin(ids, labeled["id"].to_numpy())
        shard_names = images["shard"].to_numpy(zero_copy_only=False)
        members = images["member"].to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(shard_names[1:] != shard_names[:-1]) + 1
        plan: list[_Shard | None] = []
        for start, stop in zip(
            np.r_[0, bounds].astype(int), np.r_[bounds, len(ids)].astype(int), strict=True
        ):
            if start == stop:
                continue
            path = str(shard_names[start])
            fingerprint = shard_fingerprint(self.labeler.name, self.taxonomy, path, ids[start:stop])
            if self.ledger.done(fingerprint) is not None:
                plan.append(None)
                continue
            wanted = keep[start:stop] & ~before[start:stop]
            self.summary.already_labeled += int((keep[start:stop] & before[start:stop]).sum())
            positions = np.flatnonzero(wanted) + start
            plan.append(
                _Shard(
                    path,
                    fingerprint,
                    ids[positions],
                    [str(m) for m in members[positions]],
                    stop - start,
                )
            )
        return plan

    def _shard(self, shard: _Shard, pool: Executor) -> None:
        batches: list[pa.RecordBatch] = []
        bad_ids: list[np.ndarray] = []
        bad_reasons: list[str] = []
        for decoded in self._decoded(shard, pool):
            tick = time.perf_counter()
            positions = np.array([int(d.record.key) for d in decoded], dtype=np.int64)
            result = label_decoded(
                self.labeler,
                shard.ids[positions],
                decoded,
                top_k=self.top_k,
                taxonomy=self.taxonomy,
            )
            self.summary.timings["infer"] += time.perf_counter() - tick
            if result.labels.num_rows:
                batches.append(result.labels)
            bad_ids.append(result.bad_ids)
            bad_reasons += result.bad_reasons
            self.progress.advance(len(decoded))
        bad = np.concatenate(bad_ids) if bad_ids else np.zeros(0, np.int64)
        self.commit(shard, batches, bad, bad_reasons)

    def commit(
        self, shard: _Shard, batches: list[pa.RecordBatch], bad: np.ndarray, bad_reasons: list[str]
    ) -> None:
        """One shard's `labels` rows and quarantined images, one commit with its ledger entry
        (both engines)."""
        tick = time.perf_counter()
        self.ledger.discard_partial(shard.fingerprint)
        written = sum(b.num_rows for b in batches)
        self.ledger.quarantine(
            self._quarantine(shard, bad, bad_reasons), shard.fingerprint, self.summary.run_id
        )
        transaction = lance_tables.stage(self.catalog.table_uri(LABELS), batches, schemas.LABELS)
        record = SourceRecord(shard.path, shard.fingerprint, len(shard.ids), written, len(bad))
        self.ledger.commit_source(transaction, record, self.summary.run_id)
        self.summary.timings["write"] += time.perf_counter() - tick

        self.summary.sources_ingested += 1
        self.summary.rows_read += len(shard.ids)
        self.summary.rows_written += written
        self.summary.rows_quarantined += len(bad)
        for reason in bad_reasons:
            self.summary.quarantine_reasons[reason] = (
                self.summary.quarantine_reasons.get(reason, 0) + 1
            )

    def _decoded(self, shard: _Shard, pool: Executor) -> Iterator[list[DecodedImage]]:
        """The shard's images read back and decoded, in batches of `batch_size`."""
        from coyo_db.ingest.decode import decode_batch
        from coyo_db.ingest.image_fetch import fetch_images

        specs = [self.labeler.preprocess]
        fetched = fetch_images((shard.path, member) for member in shard.members)
        chunks = chunk_records(fetched, _CHUNK)
        in_flight: deque[Future] = deque()
        depth = 2 * max(self.workers, 1)
        ready: list[DecodedImage] = []
        tick = time.perf_counter()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < depth:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight.append(pool.submit(decode_batch, chunk, specs, phash=False))
            if not in_flight:
                break
            ready += in_flight.popleft().result()
            while len(ready) >= self.batch_size:
                batch, ready = ready[: self.batch_size], ready[self.batch_size :]
                self.summary.timings["read+decode"] += time.perf_counter() - tick
                yield batch
                tick = time.perf_counter()
        self.summary.timings["read+decode"] += time.perf_counter() - tick
        if ready:
            yield ready

    def _quarantine(self, shard: _Shard, bad: np.ndarray, reasons: list[str]) -> pa.Table:
        if not len(bad):
            return schemas.QUARANTINE.empty_table()
        where = {int(i): m for i, m in zip(shard.ids, shard.members, strict=True)}
        records = [
            json.dumps(
                {
                    "shard": shard.path,
                    "member": where.get(int(i)),
                    "model": self.labeler.name,
                    "taxonomy": self.taxonomy,
                },
                ensure_ascii=False,
            )
            for i in bad
        ]
        return quarantine_rows(
            table_name=LABELS,
            source=shard.path,
            fingerprint=shard.fingerprint,
            run_id=self.summary.run_id,
            row_index=pa.array(np.flatnonzero(np.isin(shard.ids, bad)), pa.int64()),
            ids=pa.array(bad, pa.int64()),
            reasons=pa.array(reasons, pa.string()),
            records=pa.array(records, pa.string()),
        )


def chunk_records(fetched: Iterable[FetchedImage], size: int) -> Iterator[list[ImageRecord]]:
    """Fetched images as decode chunks of `size`; a record's key is the image's position in
    the locations asked for (the shard's ids to label)."""
    from coyo_db.ingest.image_types import ImageRecord

    chunk: list[ImageRecord] = []
    for image in fetched:
        chunk.append(
            ImageRecord(image.shard, image.member, str(image.index), image.data, error=image.error)
        )
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
