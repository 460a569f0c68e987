"""Reference sets: the evaluation images a dataset must not contain (ImageNet val, COCO...).

``coyo-db refset add NAME PATH`` reads PATH with the image ingest readers
(:func:`coyo_db.ingest.image_sources.find_shards`: folders searched recursively, img2dataset
``.tar`` / ``.parquet`` shards, ``files`` folders), decodes every image with the ingest decode
code (:func:`coyo_db.ingest.decode.decode_batch`: the same exact pHash, the same pixels) and
writes three tables keyed by ``(refset, ref_id)``:

- ``refsets``: one row per set (name, source path, layout, counts, descriptor, when);
- ``refset_images``: one row per image: ``ref_path`` (what the user knows it by), ``shard`` and
  ``member`` (where to read it again: verification and report thumbnails re-read it), pHash,
  size, and the low-information flag with its reason;
- ``refset_descriptors__<descriptor>``: the copy descriptor of the image and of its mirror
  image (float16), so that an audit finds flipped copies without describing its images twice.

Layouts are recognised from file names: ImageNet val (``ILSVRC2012_val_00000001.JPEG``, flat or
in synset folders) and COCO val2017 (``000000000139.jpg``) get the bare file name as
``ref_path``; any other folder gets the path relative to PATH; shards get ``<shard>/<member>``.

Low-information references (blank, near-uniform, one colour over most of the image as in
cut-outs and masks, a handful of colours) match half the web by pHash and by global
descriptors; they are flagged here and kept out of the audit's loose matching.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from coyo_db.errors import CatalogError, InputError
from coyo_db.ingest.decode_pool import decode_workers, decoder_pool
from coyo_db.ingest.ray_engine import check_engine
from coyo_db.progress import NullProgress, Progress

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_types import DecodedImage, ImageRecord, Preprocess
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

log = logging.getLogger(__name__)

REFSETS = "refsets"
REFSET_IMAGES = "refset_images"
DESCRIPTORS_PREFIX = "refset_descriptors__"

_IMAGENET_VAL = re.compile(r"^ILSVRC2012_val_\d{8}\.JPEG$", re.IGNORECASE)
_COCO = re.compile(r"^\d{12}\.jpg$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK = 16

# Low-information thresholds, on the descriptor's pixels (a few hundred pixels a side).
UNIFORM_STD = 8.0  # grey-level standard deviation below this: blank or near-uniform
BLANK_SHARE = 0.9  # one colour (16 levels a channel) over this share: a blank with a mark
DOMINANT_SHARE = 0.6  # a background over this share, and flat pixels on it: cut-out or mask
FEW_COLOURS = 8  # at most this many colours (8 levels a channel) over 99% of the pixels

REFSETS_SCHEMA = pa.schema(
    [
        pa.field("refset", pa.string()),
        pa.field("source", pa.string()),
        pa.field("layout", pa.string()),
        pa.field("images", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("low_info", pa.int64()),
        pa.field("descriptor", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
REFSET_IMAGES_SCHEMA = pa.schema(
    [
        pa.field("refset", pa.string()),
        pa.field("ref_id", pa.int64()),
        pa.field("ref_path", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("member", pa.string()),
        pa.field("image_phash", pa.string()),
        pa.field("phash", pa.uint64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("low_info", pa.bool_()),
        pa.field("low_info_reason", pa.string()),
    ]
)


def descriptors_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("refset", pa.string()),
            pa.field("ref_id", pa.int64()),
            pa.field("descriptor", pa.list_(pa.float16(), dim)),
            pa.field("descriptor_flip", pa.list_(pa.float16(), dim)),
        ]
    )


def descriptors_table(descriptor_name: str) -> str:
    from coyo_db.ingest.models.copy_descriptors import descriptor_slug

    return DESCRIPTORS_PREFIX + descriptor_slug(descriptor_name)


@dataclass
class RefsetSummary:
    """What `refset add` did."""

    name: str
    layout: str
    images: int = 0
    failed: int = 0
    low_info: int = 0
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        text = (
            f"refset {self.name} ({self.layout}): {self.images:,} images, "
            f"{self.low_info:,} low-information, {self.failed:,} unreadable, "
            f"{self.seconds:.1f}s ({rate:,.0f} images/s)"
        )
        return text


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


def _ref_paths(records: list[ImageRecord], root: Path, layout: str) -> list[str]:
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


# --- low information ------------------------------------------------------------------------


def low_information(pixels: np.ndarray) -> str | None:
    """Why an (H, W, 3) uint8 image carries too little to match safely, or None.

    Flagged: near-uniform images, one colour over :data:`BLANK_SHARE` of the image (a blank
    frame with a small mark), a handful of colours over 99% of the pixels (masks, flat icons),
    and a flat shape on one colour (a silhouette or mask cut out on a background: the
    background over :data:`DOMINANT_SHARE` and the rest flat). A detailed figure cut out on
    white, or a photo of the night sky, is not flagged: its non-background pixels carry texture.
    """
    rgb = pixels.reshape(-1, 3)
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if float(grey.std()) < UNIFORM_STD:
        return "near-uniform"
    q16 = (rgb >> 4).astype(np.int32)
    codes = (q16[:, 0] << 8) | (q16[:, 1] << 4) | q16[:, 2]
    counts = np.bincount(codes, minlength=4096)
    dominant = int(counts.argmax())
    share = counts[dominant] / len(codes)
    if share >= BLANK_SHARE:
        return f"one colour over {100 * share:.0f}% of the image"
    q8 = ((rgb >> 5).astype(np.int32) * np.array([64, 8, 1])).sum(axis=1)
    covering = _colours_covering(q8, 0.99)
    if covering <= FEW_COLOURS:
        return f"{covering} colours"
    if share >= DOMINANT_SHARE:
        rest = codes != dominant
        rest_grey = grey[rest]
        if _colours_covering(q8[rest], 0.95) <= FEW_COLOURS or float(rest_grey.std()) < 12:
            return "a flat shape on one colour (cut-out or mask)"
    return None


def _colours_covering(codes: np.ndarray, share: float) -> int:
    """How many of the most frequent codes cover `share` of `codes`."""
    if len(codes) == 0:
        return 0
    counts = np.sort(np.bincount(codes))[::-1]
    return int(np.searchsorted(np.cumsum(counts), share * len(codes)) + 1)


# --- decoding, shared with the audit --------------------------------------------------------


def decode_stream(
    records: Iterable[ImageRecord],
    specs: Sequence[Preprocess],
    *,
    workers: int = 0,
    phash: str | bool = "exact",
    pool: Executor | None = None,
) -> Iterator[DecodedImage]:
    """Decode records in order with image ingest's decode code, in `pool` (or a pool of
    `workers` processes made for this call; in this process when both are empty)."""
    from coyo_db.ingest.decode import decode_batch

    iterator = iter(records)
    own = pool is None
    if own:
        pool = decoder_pool(workers)
    try:
        depth = 2 * max(workers, 2)
        pending = []
        while True:
            while len(pending) < depth and (chunk := list(islice(iterator, _CHUNK))):
                pending.append(pool.submit(decode_batch, chunk, specs, phash=phash))
            if not pending:
                break
            yield from pending.pop(0).result()
    finally:
        if own:
            pool.shutdown(cancel_futures=True)


def describe_both(descriptor: CopyDescriptor, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of images and of their mirror images."""
    from coyo_db.ingest.models.copy_descriptors import flip_pixels

    return descriptor.describe(pixels), descriptor.describe(flip_pixels(pixels))


# --- registration ---------------------------------------------------------------------------


def add_refset(
    catalog: Catalog,
    name: str,
    path: str | Path,
    *,
    descriptor: str = "effnet-lite0",
    replace: bool = False,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    engine: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> RefsetSummary:
    """Register the images under `path` as reference set `name` (see the module docstring).

    `engine` is "local" or "ray": Ray Data reads and decodes on the cluster's CPUs and runs
    the descriptor in GPU or CPU actors (:mod:`coyo_db.audit.refsets_ray`); both engines write the
    same rows. `address` joins a running Ray cluster; without it a local Ray instance starts.
    """
    from coyo_db.ingest.image_sources import find_shards
    from coyo_db.ingest.models.copy_descriptors import load_descriptor

    check_engine(engine, address)
    if not _NAME.match(name):
        raise InputError(f"refset name {name!r}: use letters, digits, '-', '_' or '.'")
    root = Path(path).expanduser().resolve()
    shards = find_shards([root])
    exists = name in refset_names(catalog)
    if exists and not replace:
        raise InputError(f"refset {name!r} exists; pass --replace to register it again")
    started = time.perf_counter()
    progress = progress or NullProgress()
    model = load_descriptor(descriptor)
    records = (record for shard in shards for record in shard.records())
    head = list(islice(records, 256))
    layout = detect_layout([r.member for r in head if r.error is None])
    if layout == "folder" and all(s.kind in ("webdataset", "parquet") for s in shards):
        layout = "shards"
    rows = RefsetRows(name, root, layout)
    counts = [shard.count() for shard in shards]
    progress.start(f"refset add {name}", total=None if None in counts else sum(counts))
    if engine == "ray":
        from coyo_db.audit import refsets_ray

        refsets_ray.run(
            rows,
            shards,
            model,
            descriptor,
            device,
            address,
            batch_size=batch_size,
            progress=progress,
        )
    else:
        model.to(device)
        decoded = decode_stream(
            chain(head, records), [model.preprocess], workers=decode_workers(workers, most=4)
        )
        while batch := list(islice(decoded, batch_size)):
            rows.add_decoded(batch, model)
            progress.advance(len(batch))
    progress.finish()
    return rows.commit(catalog, model.name, model.dim, exists=exists, started=started)


class RefsetRows:
    """A set's rows in ref_id order, added batch by batch and written once (both engines)."""

    def __init__(self, name: str, root: Path, layout: str) -> None:
        self.name = name
        self.root = root
        self.summary = RefsetSummary(name, layout)
        self.columns: dict[str, list] = {key: [] for key in REFSET_IMAGES_SCHEMA.names}
        self.plain: list[np.ndarray] = []
        self.mirror: list[np.ndarray] = []

    def fail(self, record: ImageRecord, error: str) -> None:
        self.summary.failed += 1
        self.summary.failures[error] = self.summary.failures.get(error, 0) + 1
        log.warning("refset %s: %s/%s: %s", self.name, record.shard, record.member, error)

    def add_decoded(self, batch: Sequence[DecodedImage], model: CopyDescriptor) -> None:
        """Decoded images: the failed ones counted, the good ones described and added."""
        spec = model.preprocess
        for d in batch:
            if d.error is not None:
                self.fail(d.record, d.error)
        good = [d for d in batch if d.error is None]
        if not good:
            return
        pixels = np.stack([d.pixels[spec] for d in good])
        plain, mirror = describe_both(model, pixels)
        self.add(
            [d.record for d in good],
            [d.phash for d in good],
            [d.width for d in good],
            [d.height for d in good],
            [low_information(image) for image in pixels],
            plain,
            mirror,
        )

    def add(
        self,
        records: Sequence[ImageRecord],
        phashes: Sequence[str],
        widths: Sequence[int],
        heights: Sequence[int],
        reasons: Sequence[str | None],
        plain: np.ndarray,
        mirror: np.ndarray,
    ) -> None:
        """Good images, in order: the next ref_ids go to them."""
        first, n = len(self.columns["ref_id"]), len(records)
        columns = self.columns
        columns["refset"] += [self.name] * n
        columns["ref_id"] += range(first, first + n)
        columns["ref_path"] += _ref_paths(list(records), self.root, self.summary.layout)
        columns["shard"] += [r.shard for r in records]
        columns["member"] += [r.member for r in records]
        columns["image_phash"] += phashes
        columns["phash"] += [int(p, 16) for p in phashes]
        columns["width"] += widths
        columns["height"] += heights
        columns["low_info"] += [r is not None for r in reasons]
        columns["low_info_reason"] += reasons
        self.summary.low_info += sum(r is not None for r in reasons)
        self.plain.append(plain.astype(np.float16))
        self.mirror.append(mirror.astype(np.float16))

    def commit(
        self, catalog: Catalog, descriptor: str, dim: int, *, exists: bool, started: float
    ) -> RefsetSummary:
        """Write the set (over its old rows when `exists`): images, descriptors, its row."""
        summary, name = self.summary, self.name
        summary.images = len(self.columns["ref_id"])
        if summary.images == 0:
            raise InputError(f"{self.root}: no readable image to register")
        if exists:
            drop_refset(catalog, name)
        images = pa.Table.from_pydict(self.columns, schema=REFSET_IMAGES_SCHEMA)
        desc_schema = descriptors_schema(dim)
        desc = pa.table(
            {
                "refset": pa.array([name] * summary.images, pa.string()),
                "ref_id": pa.array(np.arange(summary.images, dtype=np.int64)),
                "descriptor": _vectors(np.concatenate(self.plain)),
                "descriptor_flip": _vectors(np.concatenate(self.mirror)),
            },
            schema=desc_schema,
        )
        summary.seconds = time.perf_counter() - started
        _ensure(catalog, descriptors_table(descriptor), desc_schema)
        catalog.append(descriptors_table(descriptor), desc, {"refset": name})
        catalog.append(REFSET_IMAGES, images, {"refset": name})
        meta = {
            "refset": name,
            "source": str(self.root),
            "layout": summary.layout,
            "images": summary.images,
            "failed": summary.failed,
            "low_info": summary.low_info,
            "descriptor": descriptor,
            "created_at": datetime.now(UTC),
        }
        table = pa.Table.from_pylist([meta], schema=REFSETS_SCHEMA)
        catalog.append(REFSETS, table, {"refset": name})
        log.info("%s", summary.line())
        return summary


def _ensure(catalog: Catalog, table: str, schema: pa.Schema) -> None:
    if catalog.has_table(table) and catalog.dataset(table).schema != schema:
        found = catalog.dataset(table).schema.field("descriptor").type
        raise CatalogError(f"table {table} holds {found} descriptors, not {schema[2].type}")
    catalog.ensure_table(table, schema)


def _vectors(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float16)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def drop_refset(catalog: Catalog, name: str) -> None:
    """Delete every row of reference set `name` (images, descriptors, the refsets row)."""
    where = f"refset = {_sql_string(name)}"
    for table in catalog.table_names():
        if table in (REFSETS, REFSET_IMAGES) or table.startswith(DESCRIPTORS_PREFIX):
            catalog.dataset(table).delete(where)


def refset_names(catalog: Catalog) -> list[str]:
    if not catalog.has_table(REFSETS):
        return []
    return sorted(set(catalog.dataset(REFSETS).to_table(columns=["refset"])["refset"].to_pylist()))


def list_refsets(catalog: Catalog) -> pa.Table:
    """One row per reference set: name, layout, counts, descriptor, source, when."""
    if not catalog.has_table(REFSETS):
        return REFSETS_SCHEMA.empty_table()
    table = catalog.dataset(REFSETS).to_table()
    return table.sort_by("refset")


def load_refset(catalog: Catalog, name: str, descriptor: str) -> tuple[pa.Table, np.ndarray]:
    """A set's `refset_images` rows (by ref_id) and its descriptors: (2N, D) float32, the plain
    ones first then the mirrored ones, or an empty array if not computed for `descriptor`."""
    if name not in refset_names(catalog):
        known = ", ".join(refset_names(catalog)) or "none; add one with `coyo-db refset add`"
        raise InputError(f"no refset {name!r} (known: {known})")
    where = f"refset = {_sql_string(name)}"
    images = catalog.dataset(REFSET_IMAGES).to_table(filter=where).sort_by("ref_id")
    table = descriptors_table(descriptor)
    if not catalog.has_table(table):
        return images, np.zeros((0, 0), dtype=np.float32)
    desc = catalog.dataset(table).to_table(filter=where).sort_by("ref_id")
    if len(desc) != len(images):
        return images, np.zeros((0, 0), dtype=np.float32)
    dim = desc.schema.field("descriptor").type.list_size
    plain = desc["descriptor"].combine_chunks().values.to_numpy(zero_copy_only=False)
    mirror = desc["descriptor_flip"].combine_chunks().values.to_numpy(zero_copy_only=False)
    both = np.concatenate([plain.reshape(-1, dim), mirror.reshape(-1, dim)]).astype(np.float32)
    return images, both


def describe_refset(
    catalog: Catalog,
    name: str,
    descriptor: CopyDescriptor,
    *,
    batch_size: int = 64,
    workers: int | None = None,
) -> np.ndarray:
    """Compute and store `descriptor` for a registered set (an audit with another --model)."""
    from coyo_db.ingest.image_fetch import fetch_images
    from coyo_db.ingest.image_types import ImageRecord

    images, _ = load_refset(catalog, name, descriptor.name)
    locations = list(zip(images["shard"].to_pylist(), images["member"].to_pylist(), strict=True))
    fetched = sorted(fetch_images(locations), key=lambda f: f.index)
    records = [ImageRecord(f.shard, f.member, f.member, f.data, error=f.error) for f in fetched]
    spec = descriptor.preprocess
    plain, mirror = [], []
    decoded = list(
        decode_stream(records, [spec], workers=decode_workers(workers, most=4), phash=False)
    )
    for start in range(0, len(decoded), batch_size):
        chunk = decoded[start : start + batch_size]
        pixels = np.stack(
            [
                d.pixels[spec] if d.error is None else np.zeros((spec.size, spec.size, 3), np.uint8)
                for d in chunk
            ]
        )
        a, b = describe_both(descriptor, pixels)
        plain.append(a)
        mirror.append(b)
    a, b = np.concatenate(plain), np.concatenate(mirror)
    schema = descriptors_schema(descriptor.dim)
    table = descriptors_table(descriptor.name)
    _ensure(catalog, table, schema)
    catalog.dataset(table).delete(f"refset = {_sql_string(name)}")
    catalog.append(
        table,
        pa.table(
            {
                "refset": pa.array([name] * len(a), pa.string()),
                "ref_id": images["ref_id"],
                "descriptor": _vectors(a),
                "descriptor_flip": _vectors(b),
            },
            schema=schema,
        ),
        {"refset": name},
    )
    return np.concatenate([a, b]).astype(np.float32)
