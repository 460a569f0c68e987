"""`coyo-db ingest images`: pHash, embeddings and scores from img2dataset shards.

A job of the image-job runner (:mod:`coyo_db.ingest.image_job`): the units are the shards
:func:`find_shards` finds, the stage is :class:`coyo_db.ingest.image_stage.ModelStage` (the
embedding models and scorers a shard still lacks), and each shard's outputs are committed per
table: `images` (with the shard's bad records in `quarantine`), one `embeddings__<model>` per
model, and the long `scores` table, each an atomic Lance commit recorded in that table's ledger
(:mod:`coyo_db.ingest.image_outputs`). A shard nothing lacks is skipped, so a killed ingest, run
again, finishes the rest with every row once; adding `--embed` or `--scores` later costs one
pass over the images for the new outputs alone. Records that cannot be read or decoded
(corrupt image, truncated tar member, zero-byte file, decompression bomb) go to `quarantine`
with the reason, and the job goes on: read = written + quarantined.

Ids come from :class:`coyo_db.ingest.image_ids.IdResolver` (the .json id, the `pairs` row with
the same url, a numeric key, or a stable hash); `images.id_origin` says which.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import lance_tables, tables
from coyo_db.catalog.id_keys import IdKeys
from coyo_db.catalog.ledger import Ledger, LedgerEntry, quarantine_rows
from coyo_db.errors import InputError
from coyo_db.ingest.image_ids import IdResolver
from coyo_db.ingest.image_job import (
    DecodePlan,
    Engine,
    ImageJob,
    JobSummary,
    StageSpec,
    UnitWork,
    caption,
    failure,
)
from coyo_db.ingest.image_outputs import (
    ModelOutput,
    ScorerOutput,
    attach_ledgers,
    embedding_scorer_models,
    images_batch,
    model_output,
    score_rows,
    vectors,
)
from coyo_db.ingest.image_shards import ImageShard, find_shards
from coyo_db.ingest.image_stage import (
    ModelStage,
    image_key,
    preprocess_specs,
    score_prefix,
    text_key,
)
from coyo_db.ingest.job_runner import run_image_job
from coyo_db.ingest.registry import load_model, load_scorer
from coyo_db.ingest.row_checks import DUPLICATE_ID, repeated_ids

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage
    from coyo_db.progress import Progress

DEFAULT_BATCH_SIZE = 64


@dataclass
class ImageIngestSummary(JobSummary):
    """The usual counts plus rows per output table and where the time went."""

    tables: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return super().line().replace("rows", "images") + self.time_split()


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
    shards = find_shards(paths)
    arguments = {
        "paths": [str(p) for p in paths],
        "embed": list(embed),
        "scores": list(scores),
        "device": device,
        "batch_size": batch_size,
        "phash": phash,
        "engine": engine,
    }
    job = ImageIngestJob(
        catalog, shards, list(embed), list(scores), device, batch_size, max_pixels, phash, arguments
    )
    summary = run_image_job(job, engine=engine, address=address, workers=workers, progress=progress)
    assert isinstance(summary, ImageIngestSummary)
    return summary


@dataclass
class ShardState:
    """What one shard still lacks, and what it produced until its commits."""

    need_images: bool
    models: list[ModelOutput]
    scorers: list[ScorerOutput]
    known_ids: dict[str, int] | None  # member -> id when `images` holds the shard already
    good: list[DecodedImage] = field(default_factory=list)
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    bad: list[DecodedImage] = field(default_factory=list)


class ImageIngestJob(ImageJob):
    """`ingest images` as a job definition: shards in, images / embeddings / scores out."""

    command = "ingest images"

    def __init__(
        self,
        catalog: Catalog,
        shards: list[ImageShard],
        embed: list[str],
        scores: list[str],
        device: str,
        batch_size: int,
        max_pixels: int | None,
        phash: str,
        arguments: dict[str, Any],
    ) -> None:
        super().__init__(catalog, ImageIngestSummary(table=tables.IMAGES.name), arguments)
        self.shards = shards
        self.embed = embed
        self.scores = scores
        self.requested_device = device
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.phash = phash
        self.ids = IdResolver(catalog)

    def prepare(self, engine: Engine) -> None:
        self.device = engine.device(self.requested_device)
        self.arguments["device"] = self.device
        self.local = engine.name == "local"
        self.threads = engine.stage_resources(self.device)[1]
        self.scorer_outputs = [
            ScorerOutput(spec, load_scorer(spec)) for spec in dict.fromkeys(self.scores)
        ]
        wanted = dict.fromkeys([*self.embed, *embedding_scorer_models(self.scorer_outputs)])
        self.model_outputs = [model_output(spec, load_model(spec)) for spec in wanted]
        if self.local:  # with Ray, the actors load their own copies on their devices
            for output in self.model_outputs:
                output.model.to(self.device)
        self.catalog.ensure_table(tables.IMAGES.name, tables.IMAGES.schema)
        self.images_ledger = Ledger(self.catalog, tables.IMAGES.name)
        attach_ledgers(self.catalog, [*self.model_outputs, *self.scorer_outputs])
        # each table keyed by id holds each id once; scores once per (id, scorer)
        self.keys = {tables.IMAGES.name: IdKeys(self.catalog, tables.IMAGES.name)}
        for output in self.model_outputs:
            self.keys[output.table] = IdKeys(self.catalog, output.table)
        for output in self.scorer_outputs:
            self.keys[output.spec] = IdKeys(
                self.catalog, tables.SCORES.name, ("scorer", output.spec)
            )

    # ---- planning -------------------------------------------------------------------------

    def plan(self) -> list[UnitWork]:
        works = []
        for shard in self.shards:
            state = self._state(shard)
            if state is None:
                self.summary.inputs_skipped += 1
                continue
            specs = tuple(preprocess_specs(state.models, state.scorers))
            decode = DecodePlan(specs, self.phash, self.max_pixels)
            works.append(UnitWork(shard, decode, self._stage(state), state))
        return works

    def _state(self, shard: ImageShard) -> ShardState | None:
        """What `shard` still lacks (None: nothing); clears an earlier attempt's quarantine."""
        fingerprint = shard.fingerprint
        ingested = self.images_ledger.done(fingerprint)
        models = [
            m
            for m in self.model_outputs
            if m.ledger.done(fingerprint.derive(m.fingerprint)) is None
        ]
        scorers = [
            s
            for s in self.scorer_outputs
            if s.ledger.done(fingerprint.derive(s.fingerprint)) is None
        ]
        if not (ingested is None or models or scorers):
            return None
        if ingested is None:
            self.images_ledger.discard_partial(fingerprint)
        known = None if ingested is None else self._stored_ids(ingested)
        return ShardState(ingested is None, models, scorers, known)

    def _stage(self, state: ShardState) -> StageSpec:
        embed = [m.spec for m in state.models]
        scores = [s.spec for s in state.scorers]
        return StageSpec(
            ModelStage.load,
            {"embed": embed, "scores": scores, "device": self.device, "threads": self.threads},
            key=json.dumps([embed, scores]),
            built=ModelStage(state.models, state.scorers) if self.local else None,
        )

    def _stored_ids(self, ingested: LedgerEntry) -> dict[str, int]:
        """The ids `images` holds for a shard's members, found under the path the shard had
        when it was ingested (its content, not its place, makes it the same shard)."""
        table = self.catalog.dataset(tables.IMAGES.name).to_table(
            columns=["member", "id"], filter=pc.field("shard") == ingested.input
        )
        return dict(zip(table["member"].to_pylist(), table["id"].to_pylist(), strict=True))

    # ---- rows -----------------------------------------------------------------------------

    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        work.state.good.extend(good)
        work.state.outputs.append(outputs)

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        work.state.bad.extend(bad)

    def commit(self, work: UnitWork) -> None:
        state: ShardState = work.state
        shard: ImageShard = work.unit
        records = [d.record for d in state.good]
        if state.known_ids is not None:
            ids = np.array([state.known_ids.get(r.member, -1) for r in records], np.int64)
            keep, origins = ids >= 0, []
        else:
            ids, origins = self.ids.resolve(records)
            keep = np.ones(len(ids), dtype=bool)
        repeat = repeated_ids(pa.array(ids, pa.int64()))
        if repeat is not None:  # the same id twice in one shard: the first one counts
            keep &= ~repeat
        outputs = _concat(state.outputs)
        captions = [caption(r) for r in records]
        fingerprint = shard.fingerprint
        read = len(state.good) + len(state.bad)
        for output in state.models:
            fresh = _fresh(self.keys[output.table], ids, keep)
            batch = _embedding_rows(output, ids, fresh, outputs, captions)
            self._commit_table(
                output.ledger,
                output.table,
                output.schema,
                [batch],
                output.fingerprint(fingerprint),
                shard,
                read,
                len(state.bad),
                self.keys[output.table],
            )
        for output in state.scorers:
            prefix = score_prefix(output.spec)
            fresh = _fresh(self.keys[output.spec], ids, keep)
            kept = {
                key.removeprefix(prefix): np.asarray(values)[fresh]
                for key, values in outputs.items()
                if key.startswith(prefix)
            }
            rows = score_rows(ids[fresh], output.spec, kept).to_batches()
            self._commit_table(
                output.ledger,
                output.table,
                output.schema,
                rows,
                output.fingerprint(fingerprint),
                shard,
                read,
                len(state.bad),
                self.keys[output.spec],
            )
        if state.need_images:
            fresh = _fresh(self.keys[tables.IMAGES.name], ids, keep)
            repeats = [d for d, new in zip(state.good, fresh, strict=True) if not new]
            if repeats:  # already in `images` (a re-downloaded or copied shard): skipped
                self.summary.count_rejected([DUPLICATE_ID] * len(repeats))
            bad = [*state.bad, *repeats]
            reasons = [failure(d) for d in state.bad] + [DUPLICATE_ID] * len(repeats)
            self.images_ledger.quarantine(
                self._quarantine(shard, bad, reasons), fingerprint, self.run_id
            )
            good = [d for d, new in zip(state.good, fresh, strict=True) if new]
            written = np.flatnonzero(fresh)
            rows = [images_batch(good, ids[written], [origins[i] for i in written])] if good else []
            self._commit_table(
                self.images_ledger,
                tables.IMAGES.name,
                tables.IMAGES.schema,
                rows,
                fingerprint,
                shard,
                read,
                len(bad),
                self.keys[tables.IMAGES.name],
            )
            self.summary.rows_written += len(good)

    def counts(self, work: UnitWork) -> bool:
        # a shard whose images are in already adds outputs only: its images were counted then
        return work.state.need_images

    def _commit_table(
        self,
        ledger: Ledger,
        table: str,
        schema: pa.Schema,
        batches: list[pa.RecordBatch],
        fingerprint: str,
        shard: ImageShard,
        read: int,
        bad: int,
        keys: IdKeys,
    ) -> None:
        transaction = lance_tables.stage(self.catalog.table_uri(table), batches, schema)
        written = sum(b.num_rows for b in batches)
        record = LedgerEntry(str(shard.path), fingerprint, read, written, bad)
        ledger.commit_input(transaction, record, self.run_id)
        keys.committed()
        self.summary.tables[table] = self.summary.tables.get(table, 0) + written

    def _quarantine(
        self, shard: ImageShard, bad: list[DecodedImage], reasons: list[str | None]
    ) -> pa.Table:
        if not bad:
            return tables.QUARANTINE.schema.empty_table()
        records = [d.record for d in bad]
        ids, origins = self.ids.resolve(records)
        known = np.array([origin != "hash" for origin in origins])
        return quarantine_rows(
            table_name=tables.IMAGES.name,
            input=str(shard.path),
            fingerprint=shard.fingerprint,
            run_id=self.run_id,
            row_index=pa.array(range(len(records)), pa.int64()),
            ids=pa.array(ids, pa.int64(), mask=~known),
            reasons=pa.array(reasons, pa.string()),
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

    def finish(self) -> None:
        self.ids.close()
        for keys in self.keys.values():
            keys.close()


def _fresh(keys: IdKeys, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`keep` without the ids the table of `keys` holds already; records the rest in it."""
    fresh = keep.copy()
    fresh[keep] = ~keys.present(ids[keep])
    keys.add(ids[fresh])
    return fresh


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-batch output arrays joined into one array per name, in batch order."""
    names = dict.fromkeys(name for part in parts for name in part)
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


def _embedding_rows(
    output: ModelOutput,
    ids: np.ndarray,
    keep: np.ndarray,
    outputs: dict[str, np.ndarray],
    captions: list[str | None],
) -> pa.RecordBatch:
    columns: dict[str, pa.Array] = {"id": pa.array(ids[keep], pa.int64())}
    image = outputs.get(image_key(output.spec))
    text = outputs.get(text_key(output.spec))
    if image is not None:
        columns["image_embedding"] = vectors(image[keep])
    if text is not None:
        columns["text_embedding"] = vectors(text[keep])
    if image is not None and text is not None:
        similarity = np.einsum("nd,nd->n", image, text).astype(np.float32)
        has_text = np.array([bool(c) for c in captions], dtype=bool)
        columns["clip_similarity"] = pa.array(similarity[keep], mask=~has_text[keep])
    if not keep.any():
        return pa.RecordBatch.from_pylist([], schema=output.schema)
    return pa.RecordBatch.from_pydict(columns, schema=output.schema)
