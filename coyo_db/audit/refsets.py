"""Reference sets: the evaluation images a dataset must not contain (ImageNet val, COCO...).

``coyo-db refset add NAME PATH`` (:mod:`coyo_db.audit.refset_job`) writes three tables keyed by
``(refset, ref_id)``:

- ``refsets``: one row per set (name, path, layout, counts, descriptor, when);
- ``refset_images``: one row per image: ``ref_path`` (what the user knows it by), ``shard`` and
  ``member`` (where to read it again: verification and report thumbnails re-read it), pHash,
  size, and the low-information flag with its reason (:mod:`coyo_db.audit.low_info`);
- ``refset_descriptors__<descriptor>``: the copy descriptor of the image (float16). Sets
  registered by earlier versions also hold their mirror images' (``descriptor_flip``); it is no
  longer written or read: the descriptor is close to mirror-invariant (a flipped copy's cosine
  to the plain reference was 0.91 or more for 95% of the benchmark's flips), and verification
  matches mirror images itself.

Layouts are recognised from file names: ImageNet val (``ILSVRC2012_val_00000001.JPEG``, flat or
in synset folders) and COCO val2017 (``000000000139.jpg``) get the bare file name as
``ref_path``; any other folder gets the path relative to PATH; shards get ``<shard>/<member>``.
This module holds the layouts, the rows of a set being registered, and the queries over sets.

Registering a set again (``--replace``) replaces its rows table by table, each table in one
commit, in this order: its ``refsets`` row is deleted, its rows in the descriptor tables of
other descriptors are deleted (they describe the old images), then its descriptors, its
``refset_images`` rows and last its ``refsets`` row are written. The ``refsets`` row says the
set is registered, so a crash between two tables leaves the set unregistered (``refset list``
omits it, an audit refuses it), never registered over a mix of old and new rows; ``refset add``
run again, with or without ``--replace``, replaces every table's rows and registers it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.image_job import JobSummary
from coyo_db.ingest.image_outputs import vectors

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import ImageRecord
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

_IMAGENET_VAL = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$", re.IGNORECASE)
_COCO = re.compile(r"^\d{12}\.jpg$", re.IGNORECASE)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class RefsetSummary(JobSummary):
    """What `refset add` did (rows are the images read; quarantined ones were unreadable)."""

    name: str = ""
    layout: str = ""
    images: int = 0
    low_info: int = 0

    @property
    def failed(self) -> int:
        return self.rows_quarantined

    @property
    def failures(self) -> dict[str, int]:
        return self.quarantine_reasons

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        return (
            f"refset {self.name} ({self.layout}): {self.images:,} images, "
            f"{self.low_info:,} low-information, {self.failed:,} unreadable, "
            f"{self.seconds:.1f}s ({rate:,.0f} images/s)"
        )


# --- layouts --------------------------------------------------------------------------------


def detect_layout(names: Sequence[str]) -> str:
    """``imagenet-val``, ``coco-val2017`` or ``folder`` from the image file names."""
    if not names:
        return "folder"
    basenames = [Path(n).name for n in names]
    if all(_IMAGENET_VAL.match(n) for n in basenames):
        return "imagenet-val"
    if all(_COCO.match(n) for n in basenames):
        return "coco-val2017"
    return "folder"


def ref_paths(records: list[ImageRecord], root: Path, layout: str) -> list[str]:
    out = []
    for record in records:
        if layout in ("imagenet-val", "coco-val2017"):
            out.append(Path(record.member).name)
        elif record.shard.endswith((".tar", ".parquet")):
            out.append(f"{Path(record.shard).name}/{record.member}")
        else:
            folder = Path(re.sub(r"#\d+$", "", record.shard))
            try:
                rel = (folder / record.member).relative_to(root)
            except ValueError:
                rel = folder.name / Path(record.member)
            out.append(rel.as_posix())
    return out


class RefsetRows:
    """A set's rows in ref_id order, added unit by unit and written once (both engines)."""

    def __init__(self, name: str, root: Path, layout: str) -> None:
        self.name = name
        self.root = root
        self.summary = RefsetSummary(table=tables.REFSET_IMAGES.name, name=name, layout=layout)
        self.columns: dict[str, list] = {key: [] for key in tables.REFSET_IMAGES.schema.names}
        self.plain: list[np.ndarray] = []

    def add(
        self,
        records: Sequence[ImageRecord],
        phashes: Sequence[str | None],
        widths: Sequence[int | None],
        heights: Sequence[int | None],
        reasons: Sequence[str | None],
        plain: np.ndarray,
    ) -> None:
        """Good images, in order, with their descriptors: the next ref_ids go to them."""
        first, n = len(self.columns["ref_id"]), len(records)
        columns = self.columns
        columns["refset"] += [self.name] * n
        columns["ref_id"] += range(first, first + n)
        columns["ref_path"] += ref_paths(list(records), self.root, self.summary.layout)
        columns["shard"] += [r.shard for r in records]
        columns["member"] += [r.member for r in records]
        columns["image_phash"] += phashes
        columns["phash"] += [int(p, 16) if p else None for p in phashes]
        columns["width"] += widths
        columns["height"] += heights
        columns["low_info"] += [r is not None for r in reasons]
        columns["low_info_reason"] += reasons
        self.summary.low_info += sum(r is not None for r in reasons)
        self.plain.append(plain.astype(np.float16))

    def commit(
        self, catalog: Catalog, descriptor: CopyDescriptor, *, exists: bool, run_id: str
    ) -> None:
        """Write the set: descriptors, images, its row, each table's rows of the set replaced
        in one commit (the order is in the module's docstring); `exists`: it is registered."""
        summary, name = self.summary, self.name
        summary.images = summary.rows_written = len(self.columns["ref_id"])
        if summary.images == 0:
            raise InputError(f"{self.root}: no readable image to register")
        keep = descriptor_table(catalog, descriptor).name  # refused before anything changes
        where, properties = refset_where(name), {"refset": name, "run_id": run_id}
        if exists:
            catalog.replace(tables.REFSETS.name, where, tables.REFSETS.empty(), properties)
        drop_descriptors(catalog, name, keep=keep)
        write_descriptors(
            catalog,
            name,
            descriptor,
            pa.array(np.arange(summary.images, dtype=np.int64)),
            np.concatenate(self.plain),
        )
        self.columns["ref_group"] = self.groups(descriptor).tolist()
        images = pa.Table.from_pydict(self.columns, schema=tables.REFSET_IMAGES.schema)
        catalog.replace(tables.REFSET_IMAGES.name, where, images, properties)
        catalog.replace(tables.REFSETS.name, where, self.refsets_row(descriptor), properties)

    def groups(self, descriptor: CopyDescriptor) -> np.ndarray:
        """Each reference's group of near-identical references (:mod:`.ref_groups`)."""
        from coyo_db.audit.centres import background_mean, refset_centre
        from coyo_db.audit.low_info import BLANK_REASON
        from coyo_db.audit.ref_groups import reference_groups

        plain = np.concatenate(self.plain)
        centre = refset_centre(plain, background_mean(descriptor))
        columns = self.columns
        return reference_groups(
            np.array([p or 0 for p in columns["phash"]], dtype=np.uint64),
            plain,
            centre,
            np.array(columns["low_info"], dtype=bool),
            np.array([r == BLANK_REASON for r in columns["low_info_reason"]], dtype=bool),
        )

    def refsets_row(self, descriptor: CopyDescriptor) -> pa.Table:
        """The set's row of `refsets`."""
        summary = self.summary
        meta = {
            "refset": self.name,
            "path": str(self.root),
            "layout": summary.layout,
            "images": summary.images,
            "failed": summary.failed,
            "low_info": summary.low_info,
            "descriptor": descriptor.name,
            "created_at": datetime.now(UTC),
        }
        return tables.REFSETS.from_pylist([meta])


def write_descriptors(
    catalog: Catalog,
    name: str,
    descriptor: CopyDescriptor,
    ref_ids: pa.Array | pa.ChunkedArray,
    plain: np.ndarray,
) -> None:
    """Store a set's descriptors in `refset_descriptors__<model>`, replacing its earlier ones
    there in one commit."""
    spec = descriptor_table(catalog, descriptor)
    rows = pa.table(
        {
            "refset": pa.array([name] * len(plain), pa.string()),
            "ref_id": ref_ids,
            "descriptor": vectors(plain),
            "descriptor_flip": pa.nulls(len(plain), spec.schema.field("descriptor_flip").type),
        },
        schema=spec.schema,
    )
    catalog.replace(spec.name, refset_where(name), rows, {"refset": name})


def descriptor_table(catalog: Catalog, descriptor: CopyDescriptor) -> tables.TableSpec:
    """The table of `descriptor`'s vectors; refused when it holds vectors of another size."""
    spec = tables.refset_descriptors(descriptor.name, descriptor.dim)
    if catalog.has_table(spec.name) and catalog.dataset(spec.name).schema != spec.schema:
        found = catalog.dataset(spec.name).schema.field("descriptor").type
        raise CatalogError(
            f"table {spec.name} holds {found} descriptors, not {spec.schema[2].type}"
        )
    return spec


def refset_where(name: str) -> str:
    """The Lance filter that selects the rows of reference set `name`."""
    return f"refset = {sql_string(name)}"


def drop_descriptors(catalog: Catalog, name: str, keep: str) -> None:
    """Delete the rows of set `name` from every descriptor table but `keep`, one commit per
    table that holds some."""
    for table in catalog.table_names():
        if table.startswith(tables.REFSET_DESCRIPTORS_PREFIX) and table != keep:
            empty = catalog.dataset(table).schema.empty_table()
            catalog.replace(table, refset_where(name), empty, {"refset": name})


def refset_names(catalog: Catalog) -> list[str]:
    if not catalog.has_table(tables.REFSETS.name):
        return []
    column = catalog.dataset(tables.REFSETS.name).to_table(columns=["refset"])["refset"]
    return sorted(set(column.to_pylist()))


def list_refsets(catalog: Catalog) -> pa.Table:
    """One row per reference set: name, path, layout, counts, descriptor, when."""
    if not catalog.has_table(tables.REFSETS.name):
        return tables.REFSETS.empty()
    return catalog.dataset(tables.REFSETS.name).to_table().sort_by("refset")


def load_refset(catalog: Catalog, name: str, descriptor: str) -> tuple[pa.Table, np.ndarray]:
    """A set's `refset_images` rows (by ref_id) and its descriptors: (N, D) float32, or an
    empty array if not computed for `descriptor`."""
    if name not in refset_names(catalog):
        known = ", ".join(refset_names(catalog)) or "none; add one with `coyo-db refset add`"
        raise InputError(f"no refset {name!r} (known: {known})")
    where = refset_where(name)
    images = catalog.dataset(tables.REFSET_IMAGES.name).to_table(filter=where).sort_by("ref_id")
    table = tables.refset_descriptors_name(descriptor)
    if not catalog.has_table(table):
        return images, np.zeros((0, 0), dtype=np.float32)
    desc = catalog.dataset(table).to_table(columns=["ref_id", "descriptor"], filter=where)
    if len(desc) != len(images):
        return images, np.zeros((0, 0), dtype=np.float32)
    dim = desc.schema.field("descriptor").type.list_size
    # sorted in numpy, not with Arrow's sort_by: it copies every list row (seconds at 50,000)
    order = np.argsort(desc["ref_id"].to_numpy(), kind="stable")
    plain = desc["descriptor"].combine_chunks().values.to_numpy(zero_copy_only=False)
    return images, plain.reshape(-1, dim)[order].astype(np.float32)
