"""`coyo-db label`: COYO-Labeled-style top-k labels for the ingested images, from a model.

A job of the image-job runner (:mod:`coyo_db.ingest.image_job`): the units are the shards of
the `images` table (:class:`coyo_db.ingest.stored_images.StoredShard`, images read back from
where ingest found them), the stage is the labeler (:class:`coyo_db.labels.label_stage.LabelStage`),
and each shard's top-k taxonomy classes become `labels` rows (id, taxonomy, model = the model
spec, labels, label_probs), the format COYO-Labeled-300M is ingested in, so every label view
and macro works on both. Both engines (local, Ray) write the same rows.

Resumable per shard of `images`: each shard's labels are one Lance commit whose fingerprint
(model, taxonomy, shard, the shard's ids) goes to the ledger of `labels`; a re-run skips the
shards it finished, a killed run leaves every row once, and images already labeled by the same
model and taxonomy (an earlier run with another --top-k) are not labeled again. Images that
cannot be read back or decoded go to `quarantine` with the reason: read = written + quarantined.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import lance_tables, tables
from coyo_db.catalog.ledger import Ledger, LedgerEntry, quarantine_rows
from coyo_db.errors import CatalogError, InputError
from coyo_db.id_lookup import IdLookup
from coyo_db.ingest.image_job import (
    DecodePlan,
    Engine,
    ImageJob,
    JobSummary,
    StageSpec,
    UnitWork,
    failure,
)
from coyo_db.ingest.job_runner import run_image_job
from coyo_db.ingest.stored_images import StoredShard, shards_of
from coyo_db.labels.label_stage import LabelStage, labels_batch

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage
    from coyo_db.progress import Progress

DEFAULT_TOP_K = 50  # COYO-Labeled-300M keeps the top 50
DEFAULT_BATCH_SIZE = 64


@dataclass
class LabelSummary(JobSummary):
    """The usual counts (inputs are shards of `images`, rows are images) and the time split."""

    model: str = ""
    taxonomy: str = ""
    top_k: int = 0
    already_labeled: int = 0  # images of unfinished shards that this model had labeled before

    def line(self) -> str:
        text = (
            f"labels ({self.model} over {self.taxonomy}, top-{self.top_k}): "
            f"{self.inputs_done} of {self.inputs_seen} shards labeled"
        )
        if self.inputs_skipped:
            text += f", {self.inputs_skipped} done before (skipped)"
        text += (
            f", {self.rows_read:,} images read = {self.rows_written:,} labeled"
            f" + {self.rows_quarantined:,} quarantined"
            f", {self.seconds:.1f} s ({self.rows_per_second:,.1f} images/s)"
        )
        return text + self.time_split()


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
    outputs are not one of timm's ImageNet lists) or ``open_clip:ARCH:TAG|PATH`` (zero-shot
    over the class names with `templates`). `taxonomy`: ``imagenet-21k``, ``imagenet-1k``, a
    taxonomy added with ``coyo-db taxonomy add``, or a class-list file. `workers` decode
    processes (default: one per core; 0 decodes in this process).

    `engine` is "local" or "ray": Ray Data reads and decodes on the cluster's CPUs and runs
    the labeler in an actor pool (one GPU each where the cluster has GPUs); this process
    commits each shard through the same ledger, so `labels` gets the same rows and resume
    works alike. `address` joins a running Ray cluster; without it a local Ray instance
    starts. The shards (and a --classes file) must be readable on every node.
    """
    from coyo_db.labels.taxonomy import resolve_taxonomy

    if top_k < 1:
        raise InputError("--top-k must be at least 1")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if not catalog.has_table(tables.IMAGES.name):
        raise CatalogError(
            f"the catalog at {catalog.home} has no images to label; run 'coyo-db ingest images'"
        )
    name, classes_table = resolve_taxonomy(catalog, taxonomy)
    arguments = {
        "model": model,
        "taxonomy": name,
        "top_k": top_k,
        "batch_size": batch_size,
        "device": device,
        "classes": classes,
        "templates": templates,
        "activation": activation,
        "engine": engine,
    }
    job = LabelJob(catalog, model, name, classes_table, top_k, batch_size, device, arguments)
    summary = run_image_job(job, engine=engine, address=address, workers=workers, progress=progress)
    assert isinstance(summary, LabelSummary)
    return summary


def shard_fingerprint(model: str, taxonomy: str, shard: str, ids: np.ndarray) -> str:
    """The ledger key of one shard's labels: the model, taxonomy, shard and its sorted ids."""
    digest = hashlib.sha256(f"label\0{model}\0{taxonomy}\0{shard}\0".encode())
    digest.update(np.sort(np.asarray(ids, np.int64)).tobytes())
    return digest.hexdigest()[:32]


@dataclass
class LabelState:
    fingerprint: str
    batches: list[pa.RecordBatch] = field(default_factory=list)
    bad: list[DecodedImage] = field(default_factory=list)


class LabelJob(ImageJob):
    """`label` as a job definition: shards of `images` in, `labels` rows out."""

    command = "label"

    def __init__(
        self,
        catalog: Catalog,
        model: str,
        taxonomy: str,
        classes_table: pa.Table,
        top_k: int,
        batch_size: int,
        device: str,
        arguments: dict[str, Any],
    ) -> None:
        summary = LabelSummary(table=tables.LABELS.name, taxonomy=taxonomy, top_k=top_k)
        super().__init__(catalog, summary, arguments)
        self.model = model
        self.taxonomy = taxonomy
        self.classes_table = classes_table
        self.top_k = top_k
        self.batch_size = batch_size
        self.requested_device = device

    def prepare(self, engine: Engine) -> None:
        from coyo_db.ingest.models.classifiers import load_labeler
        from coyo_db.labels.hierarchy import ensure_hierarchy

        arguments = self.arguments
        self.labeler = load_labeler(
            self.model,
            self.taxonomy,
            self.classes_table,
            classes=arguments["classes"],
            templates=arguments["templates"],
            activation=arguments["activation"],
            cache_dir=self.catalog.home / "cache" / "zeroshot",
        )
        self.summary.model = self.labeler.name  # type: ignore[attr-defined]
        device = engine.device(self.requested_device)
        if engine.name == "local":
            self.labeler.to(device)
            device = self.labeler.device
            built: Any = LabelStage(self.labeler, self.top_k)
        else:  # the actors load their own copies on their devices
            built = None
        arguments["device"] = device
        embeddings = getattr(self.labeler, "class_embeddings", None)
        self.stage = StageSpec(
            LabelStage.load,
            {
                "model": self.model,
                "taxonomy_name": self.taxonomy,
                "taxonomy": self.classes_table,
                "classes": arguments["classes"],
                "templates": arguments["templates"],
                "activation": arguments["activation"],
                "class_embeddings": embeddings() if embeddings else None,
                "top_k": self.top_k,
                "device": device,
                "threads": engine.stage_resources(device)[1],
            },
            key=self.labeler.name,
            built=built,
        )
        if self.classes_table.column("wnid").null_count < self.classes_table.num_rows:
            ensure_hierarchy(self.catalog)  # synsets: selection by hierarchy works at once
        self.catalog.ensure_table(tables.LABELS.name, tables.LABELS.schema)
        self.ledger = Ledger(self.catalog, tables.LABELS.name)

    def plan(self) -> list[UnitWork]:
        """One unit per shard of `images` not labeled yet, without images labeled before."""
        images = self.catalog.dataset(tables.IMAGES.name).to_table(
            columns=["id", "shard", "member"]
        )
        labeled = self.catalog.dataset(tables.LABELS.name).to_table(
            columns=["id"],
            filter=(pc.field("taxonomy") == self.taxonomy)
            & (pc.field("model") == self.labeler.name),
        )
        # one hash table of the labeled ids for every shard (np.isin would sort them per shard)
        already = IdLookup(labeled["id"].to_numpy())
        decode = DecodePlan((self.labeler.preprocess,), phash=False)
        works = []
        for path, rows, first in shards_of(images):
            ids, members = rows["id"].to_numpy(), np.asarray(rows["member"].to_pylist())
            fingerprint = shard_fingerprint(self.labeler.name, self.taxonomy, path, ids)
            if self.ledger.done(fingerprint) is not None:
                self.summary.inputs_skipped += 1
                continue
            before = already.contains(ids)
            self.summary.already_labeled += int((first & before).sum())
            wanted = first & ~before
            shard = StoredShard(path, ids[wanted], [str(m) for m in members[wanted]], len(ids))
            works.append(UnitWork(shard, decode, self.stage, LabelState(fingerprint)))
        return works

    def collect(self, work: UnitWork, good: list[DecodedImage], outputs: dict[str, Any]) -> None:
        ids = work.unit.ids_of([d.record for d in good])
        work.state.batches.append(
            labels_batch(
                ids, outputs["labels"], outputs["label_probs"], self.taxonomy, self.labeler.name
            )
        )

    def reject(self, work: UnitWork, bad: list[DecodedImage]) -> None:
        work.state.bad.extend(bad)

    def commit(self, work: UnitWork) -> None:
        """One shard's `labels` rows and quarantined images: one commit with its ledger entry."""
        shard: StoredShard = work.unit
        state: LabelState = work.state
        self.ledger.discard_partial(state.fingerprint)
        written = sum(b.num_rows for b in state.batches)
        self.ledger.quarantine(self._quarantine(shard, state), state.fingerprint, self.run_id)
        transaction = lance_tables.stage(
            self.catalog.table_uri(tables.LABELS.name), state.batches, tables.LABELS.schema
        )
        record = LedgerEntry(shard.path, state.fingerprint, len(shard.ids), written, len(state.bad))
        self.ledger.commit_input(transaction, record, self.run_id)
        self.summary.rows_written += written

    def _quarantine(self, shard: StoredShard, state: LabelState) -> pa.Table:
        if not state.bad:
            return tables.QUARANTINE.schema.empty_table()
        records = [d.record for d in state.bad]
        ids = shard.ids_of(records)
        positions = np.array([int(r.key) for r in records], dtype=np.int64)
        notes = [
            json.dumps(
                {
                    "shard": shard.path,
                    "member": r.member,
                    "model": self.labeler.name,
                    "taxonomy": self.taxonomy,
                },
                ensure_ascii=False,
            )
            for r in records
        ]
        return quarantine_rows(
            table_name=tables.LABELS.name,
            input=shard.path,
            fingerprint=state.fingerprint,
            run_id=self.run_id,
            row_index=pa.array(positions, pa.int64()),
            ids=pa.array(ids, pa.int64()),
            reasons=pa.array([failure(d) for d in state.bad], pa.string()),
            records=pa.array(notes, pa.string()),
        )
