"""Seeded synthetic COYO-700M metadata for tests, the demo and benchmarks.

Rows have the exact ``schemas.PAIRS`` schema and follow the COYO-700M dataset card: its means
(width 622, height 541, text length 69, 11 words, 0.6 faces, CLIP ViT-B/32 0.29 and ViT-L/14
0.25, watermark 0.18, aesthetic 4.8, OpenNSFW2 0.013) and its invariants:

- ``id`` is Spark ``monotonically_increasing_id()``-shaped: ``(partition << 33) + row`` with
  about ``sqrt(rows) / 4`` partitions (at most 1024) of uneven sizes; rows inside a partition
  are spaced 1 to 3 apart (ids were assigned before filtering), so ids are unique and not dense.
  The file order is a keyed shuffle of the id order.
- ``text_length == len(text)`` and ``word_count == len(re.findall(r"\\w+", text))`` on every
  row (see :mod:`coyo_db.synth.text`); the six scores lie on the float16 grid;
  ``image_phash`` is 16 lowercase hex digits.

Planted duplicates, as shares of all rows (:class:`PlantedShares`; a row has one role, and the
row it copies, its source, is always an ``original`` row):

============================  =======  ====================================================
role                          share    what the row shares with its source
============================  =======  ====================================================
``url_dup``                   12.16%   url, hence image (pHash, size, image scores); own text
``phash_text_dup``             1.00%   image and text (COYO's (image_phash, text) rule); own url
``image_dup``                  9.24%   image only, under its own url, with its own text
``near_dup``                   2.00%   nothing exact: its pHash is the source's with 1-4 bits
                                       flipped (Hamming distance 1..4)
``boilerplate_text``           2.00%   a text from a pool, each used about 40 times (> 10)
                                       from 2,000 rows on; the pool alternates 12 fixed alt
                                       texts ("thumbnail for", "Click to enlarge", ...) with
                                       captions, then holds only captions
``text_dup``                  21.20%   text only (a caption reused with another image)
``original``                  52.40%   nothing
============================  =======  ====================================================

So about 77.6% of rows hold a distinct pHash, 87.84% a distinct url and 75.8% a distinct text,
as in the card (distinct / rows). Unlike COYO-700M itself, a small share of rows fails COYO's
filters, so that filters have something to remove: 0.5% of images have min(width, height) < 200,
0.3% an aspect ratio > 3, 0.4% an NSFW score > 0.5 (either model); 0.5% of texts have 1-2
words (some also <= 5 characters), 0.2% have 150-400 words (most over 1000 characters, some
over 256 words); three fixed boilerplate texts, COYO's own examples, have 2 words.

Every value is a pure function of (seed, rows, position): the same seed and rows give the same
bytes whatever the batch size, and any slice of positions can be generated alone (shards).
:func:`synth_truth` returns each row's role and source id, the ground truth for dedup tests.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.catalog import schemas
from coyo_db.errors import InputError
from coyo_db.progress import NullProgress, Progress
from coyo_db.synth.counter_random import Streams, hex_strings
from coyo_db.synth.text import BOILERPLATE_TEXTS, Joined, caption_vocabulary, join_tokens
from coyo_db.synth.urls import image_urls

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = (
    "original",
    "url_dup",
    "phash_text_dup",
    "image_dup",
    "near_dup",
    "boilerplate_text",
    "text_dup",
)
ORIGINAL, URL_DUP, PHASH_TEXT_DUP, IMAGE_DUP, NEAR_DUP, BOILERPLATE, TEXT_DUP = range(len(ROLES))

MAX_BATCH_ROWS = 4_000_000  # keeps a batch's text under the 2 GiB of int32 string offsets
_POOL_KEYS = 1 << 62  # text keys of the boilerplate pool, apart from row positions
_POOL_REPEATS = 40  # rows per boilerplate text, on average
_SOURCE_TRIES = 32


@dataclass(frozen=True)
class PlantedShares:
    """Shares of rows per duplicate role and per filter violation (see the module docstring)."""

    url_dup: float = 0.1216
    phash_text_dup: float = 0.01
    image_dup: float = 0.0924
    near_dup: float = 0.02
    boilerplate_text: float = 0.02
    text_dup: float = 0.212
    small_image: float = 0.005
    wide_image: float = 0.003
    nsfw: float = 0.004
    short_text: float = 0.005
    long_text: float = 0.002

    def role_edges(self) -> np.ndarray:
        """Upper edges in [0, 1) of the roles after ``original``, in ``ROLES`` order."""
        return np.cumsum(astuple(self)[:6])

    def validate(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"planted share {field.name} must lie in [0, 1], got {value}")
        if self.role_edges()[-1] > 0.9:
            raise InputError("planted duplicate shares must leave at least 10% original rows")
        if self.small_image + self.wide_image > 1.0 or self.short_text + self.long_text > 1.0:
            raise InputError("small_image + wide_image and short_text + long_text must be <= 1")


class _Plan:
    """What a whole dataset of `rows` rows shares: streams, roles, partitions, text pool."""

    def __init__(self, rows: int, seed: int, shares: PlantedShares) -> None:
        shares.validate()
        self.rows = rows
        self.shares = shares
        self.streams = Streams(seed)
        self.edges = shares.role_edges()
        parts = min(1024, max(1, math.ceil(math.sqrt(rows) / 4)))
        weights = np.random.default_rng([seed, rows, 7]).uniform(0.5, 1.5, parts)
        sizes = np.floor(weights / weights.sum() * rows).astype(np.int64)
        sizes[: rows - int(sizes.sum())] += 1
        self.part_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.pool = max(1, math.ceil(rows * shares.boilerplate_text / _POOL_REPEATS))

    def _role_of(self, positions: np.ndarray) -> np.ndarray:
        u = self.streams.uniform("role", positions)
        slot = np.searchsorted(self.edges, u, side="right")  # 0..5 dup roles, 6 original
        return np.where(slot == len(self.edges), ORIGINAL, slot + 1).astype(np.int8)

    def roles(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's role and source position (itself for originals and boilerplate)."""
        role = self._role_of(positions)
        source = positions.copy()
        pending = np.flatnonzero((role != ORIGINAL) & (role != BOILERPLATE))
        for attempt in range(_SOURCE_TRIES):
            if not pending.size:
                break
            candidate = self.streams.integers("source", positions[pending], self.rows, attempt)
            found = self._role_of(candidate) == ORIGINAL
            source[pending[found]] = candidate[found]
            pending = pending[~found]
        role[pending] = ORIGINAL  # no original found: only in datasets of a handful of rows
        return role, source

    def ids(self, positions: np.ndarray) -> np.ndarray:
        order = self.streams.permute(positions, self.rows)
        part = np.searchsorted(self.part_starts, order, side="right") - 1
        row = (order - self.part_starts[part]) * 3 + self.streams.integers("id.gap", order, 3)
        return (part.astype(np.int64) << 33) + row


def _f16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(np.float32)


_LONG_SIDES = np.array(
    [300, 400, 450, 480, 500, 550, 600, 640, 700, 720, 750, 800, 900, 960, 1000, 1024, 1200,
     1280, 1500, 1600, 1920, 2000, 3000, 4000]
)  # fmt: skip
_LONG_WEIGHTS = np.array(
    [4, 6, 3, 5, 10, 3, 17, 7, 5, 3, 5, 12, 3, 2, 5, 3, 3, 2, 1, 1, 1, 1, 0.5, 0.3]
)  # fmt: skip
_ASPECTS = np.array([1.0, 1.25, 4 / 3, 1.5, 1.6, 16 / 9])
_ASPECT_WEIGHTS = np.array([18, 5, 20, 20, 5, 12])


def _sizes(plan: _Plan, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) per image key: common sizes and aspect ratios, some continuous."""
    s, shares = plan.streams, plan.shares
    long = _LONG_SIDES[s.choice("size.long", keys, _LONG_WEIGHTS)].astype(np.float64)
    smooth = s.uniform("size.smooth", keys) < 0.3
    long = np.where(smooth, np.exp(np.log(520) + 0.45 * s.normal("size.lognormal", keys)), long)
    huge = s.uniform("size.huge", keys) < 0.0003
    long = np.where(huge, 5000 + 16000 * s.uniform("size.huge.side", keys), long)
    aspect = _ASPECTS[s.choice("size.aspect", keys, _ASPECT_WEIGHTS)]
    aspect = np.where(
        s.uniform("size.aspect.smooth", keys) < 0.2, 1.0 + 1.8 * s.uniform("size.ar", keys), aspect
    )
    u = s.uniform("size.violation", keys)
    small = u < shares.small_image
    wide = (u >= shares.small_image) & (u < shares.small_image + shares.wide_image)
    aspect = np.where(wide, 3.2 + 4.8 * s.uniform("size.wide", keys), aspect)
    short = np.maximum(np.rint(long / aspect), 200)
    short = np.where(small, 40 + np.floor(160 * s.uniform("size.small", keys)), short)
    long = np.where(small | wide, np.rint(short * aspect), np.maximum(np.rint(long), short))
    landscape = s.uniform("size.landscape", keys) < 0.72
    width = np.where(landscape, long, short).astype(np.int32)
    height = np.where(landscape, short, long).astype(np.int32)
    return width, height


def _image_scores(plan: _Plan, keys: np.ndarray) -> dict[str, np.ndarray]:
    """Per image key: NSFW scores (a planted tail above 0.5), watermark, aesthetic, faces."""
    s = plan.streams
    opennsfw2 = np.minimum(np.exp(np.log(0.0015) + 2.1 * s.normal("nsfw.a", keys)), 0.499)
    gantman = np.minimum(np.exp(np.log(0.015) + 0.8 * s.normal("nsfw.b", keys)), 0.499)
    unsafe = s.uniform("nsfw.planted", keys) < plan.shares.nsfw
    high = 0.51 + 0.49 * s.uniform("nsfw.high", keys)
    which = s.uniform("nsfw.which", keys) < 0.5
    opennsfw2 = np.where(unsafe & which, high, opennsfw2)
    gantman = np.where(unsafe & ~which, high, gantman)
    watermark = s.uniform("watermark", keys) ** 4.6
    aesthetic = np.clip(4.77 + 0.8 * s.normal("aesthetic", keys), 1.0, 8.5)
    has_faces = s.uniform("faces", keys) < 0.26
    many = np.floor(np.exp(1.1 * s.normal("faces.n", keys)))
    faces = np.where(has_faces, np.minimum(1 + many, 736), 0).astype(np.int32)
    return {
        "nsfw_score_opennsfw2": _f16(opennsfw2),
        "nsfw_score_gantman": _f16(gantman),
        "watermark_score": _f16(watermark),
        "aesthetic_score_laion_v2": _f16(aesthetic),
        "num_faces": faces,
    }


def _near_dup_masks(plan: _Plan, keys: np.ndarray) -> np.ndarray:
    """Per key, a uint64 with 1 to 4 bits set (bit positions may coincide, never zero)."""
    s = plan.streams
    count = 1 + s.integers("near.count", keys, 4)
    mask = np.zeros(len(keys), dtype=np.uint64)
    for bit in range(4):
        position = s.integers("near.bit", keys, 64, bit).astype(np.uint64)
        mask |= np.where(bit < count, np.uint64(1) << position, np.uint64(0))
    return mask


def _texts(plan: _Plan, keys: np.ndarray) -> Joined:
    """Caption, word count, BERT and GPT token counts per text key."""
    s, shares = plan.streams, plan.shares
    vocabulary = caption_vocabulary()
    # Even pool entries are the fixed boilerplate texts while they last, odd ones captions.
    phrase = keys - _POOL_KEYS
    fixed = (phrase >= 0) & (phrase % 2 == 0) & (phrase < 2 * len(BOILERPLATE_TEXTS))
    phrase //= 2
    u = s.uniform("text.kind", keys)
    lengths = np.clip(np.rint(np.exp(np.log(9.0) + 0.6 * s.normal("text.n", keys))), 3, 120)
    lengths = np.where(u < shares.short_text, 1 + s.integers("text.short", keys, 2), lengths)
    lengths = np.where(
        u >= 1.0 - shares.long_text, 150 + s.integers("text.long", keys, 251), lengths
    )
    lengths = np.where(fixed, 1, lengths).astype(np.int64)
    forced = np.where(fixed, vocabulary.phrases_start + phrase, -1)
    return join_tokens(s, "text", keys, lengths, vocabulary, forced=forced)


def _batch(plan: _Plan, positions: np.ndarray) -> pa.RecordBatch:
    s = plan.streams
    role, source = plan.roles(positions)
    copies_image = (role == URL_DUP) | (role == PHASH_TEXT_DUP) | (role == IMAGE_DUP)
    image_key = np.where(copies_image, source, positions)
    url_key = np.where(role == URL_DUP, source, positions)
    pair_key = np.where(role == PHASH_TEXT_DUP, source, positions)
    text_key = np.where((role == PHASH_TEXT_DUP) | (role == TEXT_DUP), source, positions)
    pool_index = s.integers("text.pool", positions, plan.pool)
    text_key = np.where(role == BOILERPLATE, _POOL_KEYS + pool_index, text_key)

    phash = s.bits("phash", image_key)
    near = role == NEAR_DUP
    phash[near] = s.bits("phash", source[near]) ^ _near_dup_masks(plan, positions[near])

    width, height = _sizes(plan, image_key)
    texts = _texts(plan, text_key)
    # CLIP similarity belongs to the (image, text) pair; ViT-L/14 tracks ViT-B/32.
    vitb32 = np.clip(0.291 + 0.048 * s.normal("clip.b32", pair_key), -0.08, 0.59)
    vitl14 = 0.255 + 0.85 * (vitb32 - 0.291) + 0.025 * s.normal("clip.l14", pair_key)
    columns = {
        "id": plan.ids(positions),
        "url": image_urls(s, url_key),
        "text": texts.text,
        "width": width,
        "height": height,
        "image_phash": hex_strings(phash),
        "text_length": pc.utf8_length(texts.text),
        "word_count": texts.words,
        "num_tokens_bert": texts.bert,
        "num_tokens_gpt": texts.gpt,
        "clip_similarity_vitb32": _f16(vitb32),
        "clip_similarity_vitl14": _f16(np.clip(vitl14, -0.18, 0.58)),
        **_image_scores(plan, image_key),
    }
    arrays = [
        columns[f.name] if isinstance(columns[f.name], pa.Array) else pa.array(columns[f.name])
        for f in schemas.PAIRS
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schemas.PAIRS)


def _check_range(rows: int, start: int, stop: int | None, batch_rows: int) -> int:
    if rows < 0:
        raise InputError(f"rows must be >= 0, got {rows}")
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise InputError(f"batch_rows must lie in 1..{MAX_BATCH_ROWS:,}, got {batch_rows}")
    stop = rows if stop is None else stop
    if not 0 <= start <= stop <= rows:
        raise InputError(f"positions {start}..{stop} do not lie within 0..{rows}")
    return stop


def synth_batches(
    rows: int,
    *,
    seed: int = 0,
    batch_rows: int = 1_000_000,
    start: int = 0,
    stop: int | None = None,
    shares: PlantedShares | None = None,
    threads: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Rows `start`..`stop` (default: all) of a `rows`-row synthetic dataset, in file order.

    Batches hold `batch_rows` rows (the last one fewer) with the exact ``schemas.PAIRS``
    schema; the values do not depend on `batch_rows`, `start`, `stop` or `threads` (worker
    threads that make batches ahead of the consumer; 0 makes them in the caller's thread).
    """
    stop = _check_range(rows, start, stop, batch_rows)
    plan = _Plan(rows, seed, shares or PlantedShares())
    ranges = [(first, min(first + batch_rows, stop)) for first in range(start, stop, batch_rows)]
    if threads < 1 or len(ranges) <= 1:
        for first, last in ranges:
            yield _batch(plan, np.arange(first, last, dtype=np.int64))
        return
    # Worker threads make the next batches while the caller consumes this one (numpy and Arrow
    # kernels release the GIL); at most `threads` + 1 batches wait, so memory stays bounded.
    with ThreadPoolExecutor(threads, thread_name_prefix="synth") as pool:
        pending: deque[Future[pa.RecordBatch]] = deque()
        for first, last in ranges:
            pending.append(pool.submit(_batch, plan, np.arange(first, last, dtype=np.int64)))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def synth_table(rows: int, *, seed: int = 0, shares: PlantedShares | None = None) -> pa.Table:
    """The whole synthetic dataset of `rows` rows as one table (for tests and small demos)."""
    batches = list(synth_batches(rows, seed=seed, shares=shares))
    return pa.Table.from_batches(batches, schema=schemas.PAIRS)


def synth_truth(
    rows: int,
    *,
    seed: int = 0,
    start: int = 0,
    stop: int | None = None,
    shares: PlantedShares | None = None,
) -> pa.Table:
    """The planted structure of rows `start`..`stop`: id, role and the source row's id.

    ``source_id`` is null for ``original`` and ``boilerplate_text`` rows; for a ``near_dup``
    it is the row whose pHash was flipped.
    """
    stop = _check_range(rows, start, stop, 1)
    plan = _Plan(rows, seed, shares or PlantedShares())
    positions = np.arange(start, stop, dtype=np.int64)
    role, source = plan.roles(positions)
    has_source = source != positions
    roles = pa.DictionaryArray.from_arrays(pa.array(role.astype(np.int32)), pa.array(ROLES))
    return pa.table(
        {
            "position": positions,
            "id": plan.ids(positions),
            "role": roles,
            "source_id": pa.array(plan.ids(source), mask=~has_source),
        }
    )


def part_name(index: int, seed: int, rows: int) -> str:
    """Spark's part-file name, with a UUID fixed by (seed, rows) so reruns write the same names."""
    bits = Streams(seed).bits("part.uuid", np.array([rows], dtype=np.int64))
    more = Streams(seed).bits("part.uuid", np.array([rows], dtype=np.int64), 1)
    value = (int(bits[0]) << 64) | int(more[0])
    return f"part-{index:05d}-{uuid.UUID(int=value, version=4)}-c000.snappy.parquet"


def _targets(out: Path, rows: int, seed: int, files: int, overwrite: bool) -> list[Path]:
    if files < 1:
        raise InputError(f"files must be >= 1, got {files}")
    if files > max(rows, 1):
        raise InputError(f"cannot split {rows:,} rows into {files:,} files")
    if out.suffix == ".parquet":
        if files != 1:
            raise InputError(f"{out} names one file; give a directory to write {files} files")
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        return [out]
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a directory or a path ending in .parquet")
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob("part-*-c000.snappy.parquet"))
    if old and not overwrite:
        raise InputError(f"{out} already holds part files; pass --overwrite to replace them")
    for path in old:
        path.unlink()
    return [out / part_name(i, seed, rows) for i in range(files)]


def write_synth(
    out: Path | str,
    rows: int,
    *,
    seed: int = 0,
    files: int = 1,
    batch_rows: int = 1_000_000,
    shares: PlantedShares | None = None,
    overwrite: bool = False,
    threads: int = 1,
    progress: Progress | None = None,
) -> list[Path]:
    """Write a `rows`-row synthetic dataset as Parquet; return the files written.

    `out` ending in ``.parquet`` is one file (`files` must be 1). Any other `out` is a directory
    that receives `files` shards named like COYO's Spark part files
    (``part-00000-<uuid>-c000.snappy.parquet``), splitting the rows in file order into
    near-equal contiguous ranges; together they hold the same rows as the single file. Existing
    outputs are refused unless `overwrite` (which, in a directory, replaces only part files).
    Each file is written to a temporary name and renamed when complete.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    _check_range(rows, 0, None, batch_rows)
    targets = _targets(out, rows, seed, files, overwrite)
    progress = progress or NullProgress()
    progress.start("synth", total=rows)
    try:
        for index, path in enumerate(targets):
            first, last = index * rows // files, (index + 1) * rows // files
            partial = path.with_name(path.name + ".partial")
            batches = synth_batches(
                rows,
                seed=seed,
                batch_rows=batch_rows,
                start=first,
                stop=last,
                shares=shares,
                threads=threads,
            )
            try:
                with pq.ParquetWriter(partial, schemas.PAIRS, compression="snappy") as writer:
                    for batch in batches:
                        writer.write_batch(batch)
                        progress.advance(batch.num_rows)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(path)
            log.info("wrote %s rows %d..%d of %d (seed %d)", path, first, last, rows, seed)
    finally:
        progress.finish()
    return targets
