"""`coyo-db ingest images`: pHash, embeddings and scores from img2dataset shards.

reader -> decode in worker processes -> batches -> models on the device -> Arrow -> one Lance
commit per shard and table. The same code runs on CUDA (autocast, pinned memory, uint8
transfer) and on the CPU.

Per shard, the ledgers of the output tables (:mod:`coyo_db.ingest.image_outputs`) say what
is still missing; a shard nothing lacks is skipped, so a killed ingest, run again, finishes the
rest with every row once. Records that cannot be read or decoded (corrupt image, truncated tar
member, zero-byte file, decompression bomb) go to `quarantine` with the reason, and the job goes
on: read = written + quarantined.

Image ids, in order of preference: the COYO `id` in img2dataset's .json (keep it with
``--save_additional_columns '["id"]'``); the id of the `pairs` row with the same url; the
img2dataset key when it is a number; else a stable 63-bit hash of the shard name and member.
`images.id_source` says which one each row got.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import lance_tables, schemas
from coyo_db.catalog.ledger import SourceLedger, SourceRecord, quarantine_rows
from coyo_db.catalog.runs import Run
from coyo_db.catalog.summary import IngestSummary
from coyo_db.errors import InputError
from coyo_db.ingest.decode import decode_batch
from coyo_db.ingest.decode_pool import decode_workers, decoder_pool
from coyo_db.ingest.image_outputs import (
    IMAGES,
    ModelOutput,
    ScorerOutput,
    attach_ledgers,
    embedding_scorer_models,
    model_output,
    score_rows,
)
from coyo_db.ingest.image_sources import ImageShard, find_shards
from coyo_db.ingest.image_types import (
    DecodedImage,
    EmbeddingScorer,
    ImageRecord,
    ImageScorer,
    Preprocess,
    TextScorer,
)
from coyo_db.ingest.models.common import resolve_device
from coyo_db.ingest.ray_engine import check_engine
from coyo_db.ingest.registry import load_model, load_scorer
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
_CHUNK = 16  # records per decode task: big enough to amortise the process hop


@dataclass
class ImageIngestSummary(IngestSummary):
    """The usual counts plus rows per output table and where the time went."""

    tables: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(
        default_factory=lambda: {"read+decode": 0.0, "infer": 0.0, "write": 0.0}
    )

    def line(self) -> str:
        text = super().line().replace("rows", "images")
        busy = sum(self.timings.values())
        if busy > 0:
            shares = ", ".join(f"{k} {v / busy:.0%}" for k, v in self.timings.items())
            text += f"; time in {shares}"
        return text


def ingest_images(
    catalog: Catalog,
    paths: Sequence[str | Path],
    *,
    embed: Sequence[str] = (),
    scores: Sequence[str] = (),
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    max_pixels: int | None = None,
    phash: str = "exact",
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> ImageIngestSummary:
    """Ingest img2dataset shards or image folders: `images`, embeddings, scores, quarantine.

    `embed` names models (``effnet-lite0``, ``minilm``, ``open_clip:ViT-B-32:<tag or path>``),
    `scores` scorers (``nsfw``, ``faces``, ``language``, ``profanity``,
    ``aesthetic:<checkpoint>``...). `workers` decode processes (default: one per core; 0
    decodes in this process). `phash` is "exact" (bit-identical to imagehash, COYO's format)
    or "fast" (reduced-scale JPEG decode, about 5x faster, ~81% identical and ~98% within 2
    bits of exact; see docs/benchmarks.md).

    `engine` is "local" (decode processes on this machine) or "ray": Ray Data decodes on the
    cluster's CPUs and runs the models in an actor pool (one GPU each where the cluster has
    GPUs), and this process commits each shard as it completes, through the same ledgers, so
    the tables hold the same rows and resume works alike (see docs/scaling.md). `address`
    joins a running Ray cluster; without it a local Ray instance starts. `workers` is ignored
    by the Ray engine.
    """
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if phash not in ("exact", "fast"):
        raise InputError(f"--phash must be exact or fast, not {phash!r}")
    check_engine(engine, address)
    started = time.perf_counter()
    progress = progress or NullProgress()
    shards = find_shards(paths)
    with _engine_session(engine, address):
        if engine == "ray":
            from coyo_db.ingest.images_ray import cluster_device

            device = cluster_device(device)
        else:
            device = resolve_device(device)
        return _ingest(
            catalog,
            shards,
            paths,
            embed,
            scores,
            device,
            batch_size,
            workers,
            max_pixels,
            phash,
            engine,
            progress,
            started,
        )


def _engine_session(engine: str, address: str | None) -> AbstractContextManager[Any]:
    if engine != "ray":
        return nullcontext()
    from coyo_db.ingest.images_ray import session

    return session(address)


def _ingest(
    catalog: Catalog,
    shards: list[ImageShard],
    paths: Sequence[str | Path],
    embed: Sequence[str],
    scores: Sequence[str],
    device: str,
    batch_size: int,
    workers: int | None,
    max_pixels: int | None,
    phash: str,
    engine: str,
    progress: Progress,
    started: float,
) -> ImageIngestSummary:
    scorer_outputs = [ScorerOutput(spec, load_scorer(spec)) for spec in dict.fromkeys(scores)]
    wanted = list(dict.fromkeys([*embed, *embedding_scorer_models(scorer_outputs)]))
    model_outputs = [model_output(spec, load_model(spec)) for spec in wanted]
    if engine == "local":  # with Ray, the actors load their own copies on their devices
        for output in model_outputs:
            output.model.to(device)

    catalog.ensure_table(IMAGES, schemas.IMAGES)
    images_ledger = SourceLedger(catalog, IMAGES)
    attach_ledgers(catalog, [*model_outputs, *scorer_outputs])

    arguments = {
        "paths": [str(p) for p in paths],
        "embed": list(embed),
        "scores": list(scores),
        "device": device,
        "batch_size": batch_size,
        "phash": phash,
        "engine": engine,
    }
    run = Run(catalog, "ingest images", arguments)
    summary = ImageIngestSummary(table=IMAGES, run_id=run.run_id, sources_seen=len(shards))
    counts = [shard.count() for shard in shards]
    total = None if any(c is None for c in counts) else sum(counts)  # type: ignore[arg-type]
    progress.start("ingest images", total=total)
    job = _Job(
        catalog,
        images_ledger,
        model_outputs,
        scorer_outputs,
        batch_size,
        max_pixels,
        phash,
        decode_workers(workers),
        run.run_id,
        summary,
        progress,
    )
    with run.recorded(summary, progress, started):
        if engine == "ray":
            from coyo_db.ingest import images_ray

            images_ray.run(job, shards, device)
        else:
            with decoder_pool(job.workers) as pool:
                for shard in shards:
                    job.shard(shard, pool)
    log.info("%s", summary.line())
    return summary


@dataclass
class ShardResult:
    """What one shard produced, gathered until its commits."""

    images: list[pa.RecordBatch] = field(default_factory=list)
    embeddings: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    scores: dict[str, list[pa.Table]] = field(default_factory=dict)
    bad: list[tuple[ImageRecord, str]] = field(default_factory=list)
    read: int = 0
    written: int = 0


@dataclass
class ShardPlan:
    """What one shard still lacks: its images, some models, some scorers."""

    need_images: bool
    models: list[ModelOutput]
    scorers: list[ScorerOutput]
    known_ids: dict[str, int] | None  # member -> id when `images` holds the shard already

    @property
    def specs(self) -> list[Preprocess]:
        """The pixel arrays the decoders must make for these models and scorers."""
        return preprocess_specs(self.models, self.scorers)


def preprocess_specs(models: list[ModelOutput], scorers: list[ScorerOutput]) -> list[Preprocess]:
    specs = [m.model.preprocess for m in models if m.images]
    specs += [s.scorer.preprocess for s in scorers if isinstance(s.scorer, ImageScorer)]
    return list(dict.fromkeys(specs))


def image_key(spec: str) -> str:
    return f"image:{spec}"


def text_key(spec: str) -> str:
    return f"text:{spec}"


def score_prefix(spec: str) -> str:
    return f"score:{spec}:"


def run_models(
    models: list[ModelOutput],
    scorers: list[ScorerOutput],
    pixels: dict[Preprocess, np.ndarray],
    captions: list[str | None],
) -> dict[str, np.ndarray]:
    """The models and scorers on one batch of good images; no ids, no Arrow.

    `pixels` holds a (N, H, W, 3) uint8 array per :class:`Preprocess`. Returns
    ``image:<spec>`` / ``text:<spec>`` (N, dim) float32 vectors and ``score:<spec>:<column>``
    arrays of N values. What runs in a model actor of the Ray engine is exactly this.
    """
    outputs: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    for output in models:
        tick = time.perf_counter()
        if output.images:
            tensor = _tensor(pixels[output.model.preprocess], output.model)
            image = output.model.embed_images(tensor).float().cpu().numpy()
            outputs[image_key(output.spec)] = image
        if output.texts:
            text = output.model.embed_texts([c or "" for c in captions])
            outputs[text_key(output.spec)] = text.float().cpu().numpy()
        timings[output.spec] = time.perf_counter() - tick
    for output in scorers:
        tick = time.perf_counter()
        scorer = output.scorer
        if isinstance(scorer, ImageScorer):
            values = scorer.score_images(pixels[scorer.preprocess])
        elif isinstance(scorer, TextScorer):
            values = scorer.score_texts(captions)
        elif isinstance(scorer, EmbeddingScorer):
            values = scorer.score_embeddings(outputs[image_key(scorer.embedder)])
        else:  # pragma: no cover - the registry only builds the three kinds
            raise TypeError(f"{output.spec}: not a scorer")
        for name, value in values.items():
            outputs[score_prefix(output.spec) + name] = np.asarray(value)
        timings[output.spec] = time.perf_counter() - tick
    if timings:
        log.debug(
            "batch of %d: %s",
            len(captions),
            ", ".join(f"{name} {seconds:.3f}s" for name, seconds in timings.items()),
        )
    return outputs


def _tensor(array: np.ndarray, model: Any) -> Any:
    """uint8 pixels as a tensor on the model's device (pinned, copied asynchronously on CUDA)."""
    import torch

    tensor = torch.from_numpy(array)
    device = getattr(model, "device", "cpu")
    if str(device).startswith("cuda"):
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor


class _Job:
    def __init__(
        self,
        catalog: Catalog,
        images_ledger: SourceLedger,
        models: list[ModelOutput],
        scorers: list[ScorerOutput],
        batch_size: int,
        max_pixels: int | None,
        phash: str,
        workers: int,
        run_id: str,
        summary: ImageIngestSummary,
        progress: Progress,
    ) -> None:
        self.catalog = catalog
        self.images_ledger = images_ledger
        self.models = models
        self.scorers = scorers
        self.batch_size = batch_size
        self.workers = workers
        self.decode_options: dict = {"phash": phash}
        if max_pixels is not None:
            self.decode_options["max_pixels"] = max_pixels
        self.run_id = run_id
        self.summary = summary
        self.progress = progress
        self.batch_number = 0

    # ---- one shard ------------------------------------------------------------------------

    def plan(self, shard: ImageShard) -> ShardPlan | None:
        """What `shard` still lacks (None: nothing, it is skipped); clears partial quarantine."""
        fingerprint = shard.fingerprint
        need_images = self.images_ledger.done(fingerprint) is None
        models = [m for m in self.models if m.ledger.done(m.fingerprint(fingerprint)) is None]
        scorers = [s for s in self.scorers if s.ledger.done(s.fingerprint(fingerprint)) is None]
        if not (need_images or models or scorers):
            log.info("%s: skipped, already ingested", shard.path)
            self.summary.sources_skipped += 1
            return None
        known_ids = None if need_images else self._stored_ids(shard)
        if need_images:
            self.images_ledger.discard_partial(fingerprint)
        return ShardPlan(need_images, models, scorers, known_ids)

    def shard(self, shard: ImageShard, pool: Executor) -> None:
        plan = self.plan(shard)
        if plan is None:
            return
        result = ShardResult()
        for decoded in self._batches(shard, pool, plan.specs, result):
            started = time.perf_counter()
            pixels = {spec: np.stack([d.pixels[spec] for d in decoded]) for spec in plan.specs}
            captions = [_caption(d.record) for d in decoded]
            outputs = run_models(plan.models, plan.scorers, pixels, captions)
            self.collect(decoded, outputs, plan, result)
            self.summary.timings["infer"] += time.perf_counter() - started
        self.finish(shard, plan, result)

    def finish(self, shard: ImageShard, plan: ShardPlan, result: ShardResult) -> None:
        """Commit what one shard produced and count it."""
        started = time.perf_counter()
        self._commit(shard, result, plan.need_images, plan.models, plan.scorers)
        self.summary.timings["write"] += time.perf_counter() - started
        self.summary.sources_ingested += 1
        if plan.need_images:
            self.summary.rows_read += result.read
            self.summary.rows_written += result.written
            self.summary.rows_quarantined += len(result.bad)
            for _, reason in result.bad:
                self.summary.quarantine_reasons[reason] = (
                    self.summary.quarantine_reasons.get(reason, 0) + 1
                )

    def _batches(
        self, shard: ImageShard, pool: Executor, specs: list[Preprocess], result: ShardResult
    ) -> Iterator[list[DecodedImage]]:
        """Decoded good images in batches; bad records are set aside in `result.bad`."""
        in_flight: deque[Future] = deque()
        depth = 2 * max(self.workers, 1)  # chunks in flight: every worker busy, one more each
        chunks = _chunked(shard.records(), _CHUNK)
        ready: list[DecodedImage] = []
        started = time.perf_counter()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < depth:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight.append(pool.submit(decode_batch, chunk, specs, **self.decode_options))
            if not in_flight:
                break
            for decoded in in_flight.popleft().result():
                result.read += 1
                reason = decoded.record.error or decoded.error
                if reason is not None:
                    result.bad.append((decoded.record, reason))
                else:
                    ready.append(decoded)
                self.progress.advance(1)
            while len(ready) >= self.batch_size:
                batch, ready = ready[: self.batch_size], ready[self.batch_size :]
                self.summary.timings["read+decode"] += time.perf_counter() - started
                yield batch
                started = time.perf_counter()
        self.summary.timings["read+decode"] += time.perf_counter() - started
        if ready:
            yield ready

    # ---- Arrow rows from one batch's model outputs ----------------------------------------

    def collect(
        self,
        batch: list[DecodedImage],
        outputs: dict[str, np.ndarray],
        plan: ShardPlan,
        result: ShardResult,
    ) -> None:
        """Add one batch of good images and their :func:`run_models` outputs to `result`."""
        self.batch_number += 1
        records = [d.record for d in batch]
        known_ids = plan.known_ids
        ids, id_sources = self._ids(records, known_ids)
        keep = ids >= 0 if known_ids is not None else np.ones(len(ids), dtype=bool)
        captions = [_caption(r) for r in records]

        if known_ids is None:
            result.images.append(_images_batch(batch, ids, id_sources))
            result.written += len(batch)

        for output in plan.models:
            columns: dict[str, pa.Array] = {"id": pa.array(ids[keep], pa.int64())}
            image = outputs.get(image_key(output.spec))
            text = outputs.get(text_key(output.spec))
            if image is not None:
                columns["image_embedding"] = _vectors(image[keep])
            if text is not None:
                columns["text_embedding"] = _vectors(text[keep])
            if image is not None and text is not None:
                similarity = np.einsum("nd,nd->n", image, text).astype(np.float32)
                has_text = np.array([bool(c) for c in captions])
                columns["clip_similarity"] = pa.array(similarity[keep], mask=~has_text[keep])
            result.embeddings.setdefault(output.table, []).append(
                pa.RecordBatch.from_pydict(columns, schema=output.schema)
            )

        for output in plan.scorers:
            prefix = score_prefix(output.spec)
            kept = {
                key.removeprefix(prefix): np.asarray(values)[keep]
                for key, values in outputs.items()
                if key.startswith(prefix)
            }
            result.scores.setdefault(output.spec, []).append(
                score_rows(ids[keep], output.spec, kept)
            )

    def _ids(
        self, records: list[ImageRecord], known: dict[str, int] | None
    ) -> tuple[np.ndarray, list[str]]:
        if known is not None:  # the ids `images` already holds for this shard
            return np.array([known.get(r.member, -1) for r in records], np.int64), []
        ids = np.full(len(records), -1, np.int64)
        sources = [""] * len(records)
        missing_urls: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            value = record.meta.get("id")
            if isinstance(value, (int, str)) and str(value).lstrip("-").isdigit():
                ids[i], sources[i] = int(value), "json"
            elif record.url:
                missing_urls.setdefault(record.url, []).append(i)
        for url, found in self._ids_by_url(list(missing_urls)).items():
            for i in missing_urls[url]:
                ids[i], sources[i] = found, "url"
        for i, record in enumerate(records):
            if sources[i]:
                continue
            if record.key.isdigit():
                ids[i], sources[i] = int(record.key), "key"
            else:
                digest = hashlib.blake2b(
                    f"{Path(record.shard).name}/{record.member}".encode(), digest_size=8
                ).digest()
                ids[i], sources[i] = int.from_bytes(digest, "big") >> 1, "hash"
        return ids, sources

    def _ids_by_url(self, urls: list[str]) -> dict[str, int]:
        if not urls or not self.catalog.has_table("pairs"):
            return {}
        with self.catalog.connection() as con:
            con.register("wanted_urls", pa.table({"url": pa.array(urls, pa.string())}))
            rows = con.execute(
                "SELECT w.url, min(p.id) FROM wanted_urls w JOIN pairs p ON p.url = w.url "
                "GROUP BY w.url"
            ).fetchall()
        return dict(rows)

    def _stored_ids(self, shard: ImageShard) -> dict[str, int]:
        table = self.catalog.dataset(IMAGES).to_table(
            columns=["member", "id"], filter=pc.field("shard") == str(shard.path)
        )
        return dict(zip(table["member"].to_pylist(), table["id"].to_pylist(), strict=True))

    # ---- commits --------------------------------------------------------------------------

    def _commit(
        self,
        shard: ImageShard,
        result: ShardResult,
        need_images: bool,
        models: list[ModelOutput],
        scorers: list[ScorerOutput],
    ) -> None:
        fingerprint = shard.fingerprint
        outputs: list[tuple[ModelOutput | ScorerOutput, list[pa.RecordBatch]]] = [
            (output, result.embeddings.get(output.table, [])) for output in models
        ]
        for output in scorers:
            tables = result.scores.get(output.spec, [])
            outputs.append((output, [b for t in tables for b in t.to_batches()]))
        for output, batches in outputs:
            self._commit_table(
                output.ledger,
                output.table,
                output.schema,
                batches,
                output.fingerprint(fingerprint),
                shard,
                result,
            )
        if need_images:
            self.images_ledger.quarantine(self._quarantine(shard, result), fingerprint, self.run_id)
            self._commit_table(
                self.images_ledger,
                IMAGES,
                schemas.IMAGES,
                result.images,
                fingerprint,
                shard,
                result,
            )

    def _commit_table(
        self,
        ledger: SourceLedger,
        table: str,
        schema: pa.Schema,
        batches: list[pa.RecordBatch],
        fingerprint: str,
        shard: ImageShard,
        result: ShardResult,
    ) -> None:
        transaction = lance_tables.stage(self.catalog.table_uri(table), batches, schema)
        record = SourceRecord(
            str(shard.path),
            fingerprint,
            result.read,
            sum(b.num_rows for b in batches),
            len(result.bad),
        )
        ledger.commit_source(transaction, record, self.run_id)
        self.summary.tables[table] = self.summary.tables.get(table, 0) + record.rows_written

    def _quarantine(self, shard: ImageShard, result: ShardResult) -> pa.Table:
        if not result.bad:
            return schemas.QUARANTINE.empty_table()
        import json

        records = [r for r, _ in result.bad]
        return quarantine_rows(
            table_name=IMAGES,
            source=str(shard.path),
            fingerprint=shard.fingerprint,
            run_id=self.run_id,
            row_index=pa.array(range(len(records)), pa.int64()),
            ids=pa.nulls(len(records), pa.int64()),
            reasons=pa.array([reason for _, reason in result.bad], pa.string()),
            records=pa.array(
                [
                    json.dumps(
                        {
                            "member": r.member,
                            "key": r.key,
                            "url": r.url,
                            "caption": r.caption,
                            "meta": r.meta,
                        },
                        ensure_ascii=False,
                        default=str,
                    )
                    for r in records
                ],
                pa.string(),
            ),
        )


def _chunked(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _caption(record: ImageRecord) -> str | None:
    caption = record.caption if record.caption is not None else record.meta.get("caption")
    return caption if isinstance(caption, str) and caption.strip() else None


def _vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    flat = np.ascontiguousarray(values, dtype=np.float16).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), values.shape[1])


def _images_batch(batch: list[DecodedImage], ids: np.ndarray, sources: list[str]) -> pa.RecordBatch:
    from coyo_db.ingest.phash import phash_hex_to_uint64

    phashes = [d.phash for d in batch]
    return pa.RecordBatch.from_pydict(
        {
            "id": pa.array(ids, pa.int64()),
            "id_source": pa.array(sources, pa.string()),
            "key": pa.array([d.record.key for d in batch], pa.string()),
            "url": pa.array([d.record.url for d in batch], pa.string()),
            "caption": pa.array([_caption(d.record) for d in batch], pa.string()),
            "shard": pa.array([d.record.shard for d in batch], pa.string()),
            "member": pa.array([d.record.member for d in batch], pa.string()),
            "image_phash": pa.array(phashes, pa.string()),
            "phash": pa.array(phash_hex_to_uint64(phashes), pa.uint64()),
            "bytes": pa.array([d.nbytes for d in batch], pa.int64()),
            "width": pa.array([d.width for d in batch], pa.int32()),
            "height": pa.array([d.height for d in batch], pa.int32()),
            "format": pa.array([d.format for d in batch], pa.string()),
        },
        schema=schemas.IMAGES,
    )
