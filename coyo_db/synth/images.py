"""Seeded synthetic images written as img2dataset webdataset shards, with planted near-copies.

For the demo and benchmarks: each original is a procedural picture (gradient background,
random shapes, a little noise) at a web-like size; a share of the images are near-copies of an
earlier one (resized, cropped 80-95%, re-encoded at low JPEG quality, or flipped), which pHash
and embeddings should find again. Each sample is `<key>.jpg`, `<key>.txt` (caption) and
`<key>.json` (key, url, caption, width, height, status and the COYO `id`), as img2dataset
writes with ``--save_additional_columns '["id"]'``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NEAR_COPY_KINDS = ("resize", "crop", "jpeg", "flip")


@dataclass(frozen=True)
class PlantedCopy:
    """Image `copy_key` is a near-copy of `original_key`, made by `kind`."""

    copy_key: str
    original_key: str
    kind: str


def picture(rng: np.random.Generator, width: int, height: int):  # type: ignore[no-untyped-def]
    """A random RGB picture: a noisy two-colour gradient with a few filled shapes on it."""
    from PIL import Image, ImageDraw

    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    pixels += rng.normal(0, 6, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 10, width // 2))
        y1 = y0 + int(rng.integers(height // 10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    return image


def near_copy(image, kind: str, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """`image` resized, cropped, recompressed or mirrored (`kind`: :data:`NEAR_COPY_KINDS`)."""
    from PIL import Image, ImageOps

    width, height = image.size
    if kind == "resize":
        scale = float(rng.uniform(0.5, 0.8))
        return image.resize((max(1, int(width * scale)), max(1, int(height * scale))))
    if kind == "crop":
        keep = float(rng.uniform(0.8, 0.95))
        w, h = int(width * keep), int(height * keep)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        return image.crop((x, y, x + w, y + h))
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(10, 25)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "flip":
        return ImageOps.mirror(image)
    raise ValueError(f"unknown near-copy kind {kind!r}")


def write_image_shards(
    out: Path,
    ids: Sequence[int],
    *,
    captions: Sequence[str] | None = None,
    urls: Sequence[str] | None = None,
    per_shard: int = 100,
    near_copy_share: float = 0.2,
    seed: int = 0,
) -> tuple[list[Path], list[PlantedCopy]]:
    """Write one image per id into webdataset shards under `out`; return shards and copies."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    planted: list[PlantedCopy] = []
    originals: list[tuple[str, object]] = []
    samples: list[tuple[str, bytes, str, dict]] = []
    for index, image_id in enumerate(ids):
        key = f"{index // per_shard:05d}{index % per_shard:04d}"
        if originals and rng.random() < near_copy_share:
            source_key, source = originals[int(rng.integers(0, len(originals)))]
            kind = NEAR_COPY_KINDS[int(rng.integers(0, len(NEAR_COPY_KINDS)))]
            image = near_copy(source, kind, rng)
            planted.append(PlantedCopy(key, source_key, kind))
        else:
            width, height = int(rng.integers(256, 640)), int(rng.integers(256, 640))
            image = picture(rng, width, height)
            originals.append((key, image))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        caption = captions[index] if captions is not None else f"synthetic picture {key}"
        url = urls[index] if urls is not None else f"https://example.com/images/{key}.jpg"
        meta = {
            "key": key,
            "url": url,
            "caption": caption,
            "width": image.size[0],
            "height": image.size[1],
            "status": "success",
            "id": int(image_id),
        }
        samples.append((key, buffer.getvalue(), caption, meta))

    shards = []
    for first in range(0, len(samples), per_shard):
        shards.append(out / f"{first // per_shard:05d}.tar")
        with tarfile.open(shards[-1], "w") as tar:
            for key, jpeg, caption, meta in samples[first : first + per_shard]:
                for suffix, payload in (
                    ("jpg", jpeg),
                    ("txt", caption.encode("utf-8")),
                    ("json", json.dumps(meta).encode("utf-8")),
                ):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return shards, planted


def jpeg_bytes(image, quality: int = 90) -> bytes:  # type: ignore[no-untyped-def]
    """A PIL image encoded as JPEG at `quality`."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_id_shard(path: Path, samples: Sequence[tuple[str, bytes, int]]) -> None:
    """An img2dataset-style webdataset shard of (key, jpeg, id) samples: `<key>.jpg` and
    `<key>.json` holding the key, the id and status "success"."""
    with tarfile.open(path, "w") as tar:
        for key, data, image_id in samples:
            meta = json.dumps({"key": key, "id": image_id, "status": "success"}).encode()
            for suffix, payload in (("jpg", data), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
