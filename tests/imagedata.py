"""Builders of test images and img2dataset-shaped shards: seeded, deterministic and fast.

Images: :func:`make_images` (varied sizes, colours and patterns), :func:`half_image` (two known
colours side by side), :func:`near_copy` (crop / resize / JPEG re-encode / flip of an image),
encoders (:func:`jpeg_bytes`, :func:`png_bytes`, :func:`encode`), and broken data
(:func:`corrupt_jpeg`, :func:`truncated_jpeg`, :func:`bomb_png`).

Shards, from :class:`Sample` lists (:func:`make_samples`) as img2dataset writes them:
:func:`write_webdataset` (``.tar`` of ``.jpg/.json/.txt``, plus its ``.parquet`` metadata and
``_stats.json`` beside it), :func:`write_img2dataset_parquet` (image bytes in a column),
:func:`write_files_folder` (``00000/`` of files), :func:`write_plain_folder`, and
:func:`truncate_tar` to cut a tar inside a member.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

PATTERNS = ("gradient", "stripes", "checker", "shapes", "noise")
NEAR_COPY_KINDS = ("crop", "resize", "jpeg", "flip")


# --- images ---------------------------------------------------------------------------------


def make_images(
    n: int, seed: int = 0, *, min_side: int = 48, max_side: int = 160
) -> list[Image.Image]:
    """`n` RGB images of varied sizes, colours and patterns (gradient, stripes, checker,
    shapes, noise), the same for the same seed."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        width = int(rng.integers(min_side, max_side + 1))
        height = int(rng.integers(min_side, max_side + 1))
        images.append(_pattern(PATTERNS[i % len(PATTERNS)], width, height, rng))
    return images


def _pattern(kind: str, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    y, x = np.mgrid[0:height, 0:width]
    if kind == "gradient":
        t = (x / max(width - 1, 1))[..., None]
        pixels = a * (1 - t) + b * t
    elif kind == "stripes":
        period = int(rng.integers(4, 16))
        pixels = np.where(((x // period) % 2 == 0)[..., None], a, b)
    elif kind == "checker":
        cell = int(rng.integers(6, 20))
        pixels = np.where((((x // cell) + (y // cell)) % 2 == 0)[..., None], a, b)
    elif kind == "noise":
        pixels = rng.integers(0, 256, (height, width, 3))
    else:
        pixels = np.broadcast_to(a, (height, width, 3))
    image = Image.fromarray(np.asarray(pixels, dtype=np.float64).clip(0, 255).astype(np.uint8))
    if kind == "shapes":
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            x1 = x0 + int(rng.integers(width // 6, width // 2 + 2))
            y1 = y0 + int(rng.integers(height // 6, height // 2 + 2))
            draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def half_image(
    width: int = 200,
    height: int = 100,
    left: tuple[int, ...] = (255, 0, 0),
    right: tuple[int, ...] = (0, 0, 255),
    mode: str = "RGB",
) -> Image.Image:
    """Left half one colour, right half another (defaults: red | blue)."""
    image = Image.new(mode, (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 90, **options: Any) -> bytes:
    return encode(image, "JPEG", quality=quality, **options)


def png_bytes(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def near_copy(image: Image.Image, kind: str) -> Image.Image:
    """A near-copy as dedup should find it: ``crop`` (the centre 90%), ``resize`` (to 60%),
    ``jpeg`` (re-encoded at quality 30), ``flip`` (mirrored)."""
    width, height = image.size
    rgb = image.convert("RGB")
    if kind == "crop":
        dx, dy = round(width * 0.05), round(height * 0.05)
        return rgb.crop((dx, dy, width - dx, height - dy))
    if kind == "resize":
        size = (max(1, round(width * 0.6)), max(1, round(height * 0.6)))
        return rgb.resize(size, Image.Resampling.BICUBIC)
    if kind == "jpeg":
        return Image.open(io.BytesIO(jpeg_bytes(rgb, quality=30))).convert("RGB")
    if kind == "flip":
        return rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raise ValueError(f"unknown near-copy kind {kind!r}: one of {NEAR_COPY_KINDS}")


def corrupt_jpeg(seed: int = 0) -> bytes:
    """A JPEG whose header is intact (it opens, with its size) but whose data is garbage."""
    data = bytearray(jpeg_bytes(make_images(1, seed, min_side=96, max_side=96)[0]))
    sos = data.index(b"\xff\xda")  # start of scan: keep the headers, wreck what follows
    rng = np.random.default_rng(seed)
    garbage = rng.integers(0, 256, len(data) - sos - 10, dtype=np.uint8).tobytes()
    return bytes(data[: sos + 8]) + garbage.replace(b"\xff", b"\x00") + b"\xff\xd9"


def truncated_jpeg(seed: int = 0, keep: float = 0.5) -> bytes:
    """A JPEG whose headers are whole but whose image data is cut after `keep` of it."""
    data = jpeg_bytes(make_images(1, seed, min_side=128, max_side=128)[0])
    sos = data.index(b"\xff\xda")
    return data[: sos + int((len(data) - sos) * keep)]


def bomb_png(width: int = 20_000, height: int = 12_000) -> bytes:
    """A valid 1-bit greyscale PNG of `width` x `height` zero pixels: KBs on disk, hundreds of
    megapixels once decoded. Built row by row without allocating the image."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks, rows_left, block = [], height, 1024
    while rows_left:
        n = min(block, rows_left)
        chunks.append(compressor.compress(row * n))
        rows_left -= n
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(chunks))
        + (_chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


# --- samples and shards ---------------------------------------------------------------------


@dataclass
class Sample:
    """One img2dataset sample: image bytes (None: a failed download) and its metadata."""

    key: str
    data: bytes | None
    ext: str = "jpg"
    caption: str | None = None
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more json fields, e.g. {"id": 7}
    json_text: str | None = None  # the .json verbatim instead of the built one (bad JSON)
    error_message: str | None = None

    def meta(self) -> dict[str, Any]:
        """The json img2dataset writes beside the image."""
        width = height = None
        if self.data:
            with contextlib.suppress(Exception):  # not an image: no size, as img2dataset
                width, height = Image.open(io.BytesIO(self.data)).size
        return {
            "url": self.url,
            "caption": self.caption,
            "key": self.key,
            "status": "success" if self.data is not None else "failed_to_download",
            "error_message": self.error_message,
            "width": width,
            "height": height,
            **self.extra,
        }


def make_samples(
    n: int, seed: int = 0, *, ids: Sequence[int] | None = None, start: int = 0
) -> list[Sample]:
    """`n` JPEG samples keyed ``000000000``, ``000000001``... with captions, urls and (if
    `ids` is given) a COYO ``id`` in their json."""
    samples = []
    for i, image in enumerate(make_images(n, seed)):
        number = start + i
        extra = {"id": int(ids[i])} if ids is not None else {}
        samples.append(
            Sample(
                key=f"{number:09d}",
                data=jpeg_bytes(image),
                caption=f"picture number {number}",
                url=f"https://example.com/images/{number}.jpg",
                extra=extra,
            )
        )
    return samples


def write_webdataset(
    path: str | Path, samples: Sequence[Sample], *, sidecars: bool = True, caption: bool = True
) -> Path:
    """An img2dataset webdataset shard: members `<key>.<ext>`, `<key>.json`, `<key>.txt` in
    webdataset's order; failed samples are left out of the tar, as img2dataset does. With
    `sidecars`, its metadata `.parquet` and `_stats.json` are written beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            if sample.data is None:
                continue
            parts = {sample.ext: sample.data, "json": _json_bytes(sample)}
            if caption and sample.caption is not None:
                parts["txt"] = sample.caption.encode("utf-8")
            for ext in sorted(parts):
                _add_member(tar, f"{sample.key}.{ext}", parts[ext])
    if sidecars:
        _write_sidecars(path.with_suffix(""), samples)
    return path


def write_img2dataset_parquet(
    path: str | Path, samples: Sequence[Sample], *, image_column: str = "jpg"
) -> Path:
    """img2dataset's `parquet` output: one row per sample (failed ones too, with null bytes),
    the image in `image_column`, the json's fields as columns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in samples:
        row = {"key": sample.key, image_column: sample.data, "txt": sample.caption}
        row.update(sample.meta())
        rows.append(row)
    table = pa.Table.from_pylist(rows)
    table = table.set_column(
        table.schema.get_field_index(image_column),
        image_column,
        pa.array([s.data for s in samples], pa.binary()),
    )
    pq.write_table(table, path, row_group_size=4)
    return path


def write_files_folder(
    root: str | Path, samples: Sequence[Sample], *, shard: int = 0, sidecars: bool = True
) -> Path:
    """img2dataset's `files` output: `root/00000/<key>.jpg|.txt|.json` (and, with `sidecars`,
    `root/00000.parquet` and `root/00000_stats.json`). Returns the shard folder."""
    folder = Path(root) / f"{shard:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        if sample.data is None:
            continue
        (folder / f"{sample.key}.{sample.ext}").write_bytes(sample.data)
        (folder / f"{sample.key}.json").write_bytes(_json_bytes(sample))
        if sample.caption is not None:
            (folder / f"{sample.key}.txt").write_text(sample.caption, encoding="utf-8")
    if sidecars:
        _write_sidecars(folder, samples)
    return folder


def write_plain_folder(root: str | Path, files: dict[str, bytes]) -> Path:
    """A folder of image files: `files` maps relative paths (subfolders allowed) to bytes."""
    root = Path(root)
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)
    return root


def truncate_tar(path: str | Path, at_member: str | int, *, into: float = 0.5) -> Path:
    """Cut the tar at `path` in place, `into` of the way through the data of `at_member`
    (a member name, or its index). Returns the path."""
    path = Path(path)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    if isinstance(at_member, int):
        member = members[at_member]
    else:
        member = next(m for m in members if m.name == at_member)
    cut = member.offset_data + max(1, int(member.size * into))
    with path.open("r+b") as fh:
        fh.truncate(cut)
    return path


def cut_tar_at(path: str | Path, offset: int) -> Path:
    """Cut the tar at `path` in place at byte `offset` (any place: a header, padding...)."""
    path = Path(path)
    with path.open("r+b") as fh:
        fh.truncate(offset)
    return path


def write_tar(path: str | Path, members: dict[str, bytes]) -> Path:
    """A plain tar of `members` ({member name: bytes}), as a broken or hand-made shard."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            _add_member(tar, name, data)
    return Path(path)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def _json_bytes(sample: Sample) -> bytes:
    if sample.json_text is not None:
        return sample.json_text.encode("utf-8")
    return json.dumps(sample.meta()).encode("utf-8")


def _write_sidecars(stem: Path, samples: Sequence[Sample]) -> None:
    """img2dataset's per-shard metadata Parquet (no image bytes) and stats json."""
    rows = [{"key": s.key, **s.meta()} for s in samples]
    pq.write_table(pa.Table.from_pylist(rows), stem.with_name(stem.name + ".parquet"))
    successes = sum(s.data is not None for s in samples)
    stats = {
        "count": len(samples),
        "successes": successes,
        "failed_to_download": len(samples) - successes,
    }
    stem.with_name(stem.name + "_stats.json").write_text(json.dumps(stats), encoding="utf-8")
