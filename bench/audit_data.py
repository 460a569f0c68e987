"""The planted-copy benchmark's images: real pictures from Debian packages and scikit-image.

Install the packages first (Debian 12)::

    apt-get install -y --no-install-recommends stellarium-data wesnoth-1.16-data \
        plasma-workspace-wallpapers mate-backgrounds gnome-backgrounds ukui-wallpapers \
        desktop-base openclipart-png tuxpaint-stamps-default kstars-data

Pools (images at least :data:`MIN_SIDE` pixels on both sides):

- photo-like (references are drawn from these; the rest become distractors): stellarium's
  nebula photographs (Hubble, ESO...: many galaxies look alike, hard negatives), Wesnoth's
  painted portraits and story art, the desktop wallpapers (one size each), scikit-image's photos;
- distractors only: openclipart's PNG clip art, Tux Paint's stamps, stellarium's sky-culture
  drawings, KStars' English handbook screenshots.

Images whose pixels match another one (the same wallpaper at several sizes, a portrait and its
variant) are merged first (pHash within 8 bits or descriptor cosine >= 0.9), so a distractor
is never a true copy of a reference. References are split in halves, dev (thresholds are
tuned there) and test (figures are reported there); distractors likewise.

Each reference gets one copy per :data:`TRANSFORMS` entry. Everything is written as JPEG (at
most :data:`MAX_SIDE` pixels a side) under ``bench/out/audit-data``.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

PACKAGES_PHOTO = (
    "stellarium-data",
    "wesnoth-1.16-data",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "gnome-backgrounds",
    "ukui-wallpapers",
    "desktop-base",
)
PACKAGES_DISTRACTOR = ("openclipart-png", "tuxpaint-stamps-default", "kstars-data")
MIN_SIDE = 160
MAX_SIDE = 640
TRANSFORMS = ("resize_jpeg", "crop", "jpeg_low", "flip", "colour", "text", "border")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
WORDS = [
    "sale",
    "new",
    "photo",
    "best",
    "deal",
    "free",
    "shipping",
    "today",
    "only",
    "click",
    "here",
    "wow",
    "2024",
    "amazing",
    "look",
]


@dataclass(frozen=True)
class PoolImage:
    path: str
    package: str
    photo_like: bool


def _package_files(package: str) -> list[str]:
    out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"package {package} is not installed: apt-get install -y {package}")
    return sorted(
        f for f in out.stdout.splitlines() if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )


def _photo_like(package: str, path: str) -> bool | None:
    """True: may be a reference; False: distractor only; None: not used."""
    if package == "stellarium-data":
        if "/nebulae/" in path:
            return True
        return False if "/skycultures/" in path else None
    if package == "wesnoth-1.16-data":
        return True if ("/portraits/" in path or "/story/" in path) else None
    if package == "kstars-data":
        return False if "/HTML/en/" in path else None
    return package not in PACKAGES_DISTRACTOR  # wallpapers are photo-like


def collect_pool() -> list[PoolImage]:
    pool = []
    for package in PACKAGES_PHOTO + PACKAGES_DISTRACTOR:
        seen_dirs: set[str] = set()
        files = _package_files(package)
        if package == "openclipart-png":
            files = files[::2]  # half of the clip art is plenty of distractors
        for path in files:
            kind = _photo_like(package, path)
            if kind is None:
                continue
            if package == "plasma-workspace-wallpapers":  # one size per wallpaper
                folder = str(Path(path).parent)
                if folder in seen_dirs:
                    continue
                seen_dirs.add(folder)
            pool.append(PoolImage(path, package, kind))
    import skimage.data

    data_dir = Path(skimage.data.data_dir)
    for name in (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "retina.jpg",
        "hubble_deep_field.jpg",
        "ihc.png",
        "camera.png",
        "moon.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "coins.png",
        "page.png",
    ):
        pool.append(PoolImage(str(data_dir / name), "scikit-image", True))
    return pool


def load_rgb(path: str) -> Image.Image | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
            img.draft("RGB", (MAX_SIDE * 2, MAX_SIDE * 2))
            img.load()
        except Exception:
            return None
    if min(img.size) < MIN_SIDE:
        return None
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        img = canvas
    img = img.convert("RGB")
    img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def transform(img: Image.Image, kind: str, rng: np.random.Generator) -> bytes:
    """One planted copy of `img`, encoded."""
    w, h = img.size
    if kind == "resize_jpeg":
        scale = float(rng.uniform(0.3, 0.6))
        small = img.resize((max(32, int(w * scale)), max(32, int(h * scale))), Image.BICUBIC)
        return jpeg(small, int(rng.integers(50, 76)))
    if kind == "crop":
        fw, fh = float(rng.uniform(0.7, 0.9)), float(rng.uniform(0.7, 0.9))
        cw, ch = int(w * fw), int(h * fh)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return jpeg(img.crop((x, y, x + cw, y + ch)), 85)
    if kind == "jpeg_low":
        return jpeg(img, int(rng.integers(10, 21)))
    if kind == "flip":
        return jpeg(ImageOps.mirror(img), 85)
    if kind == "colour":
        which = int(rng.integers(0, 3))
        if which == 0:
            out = ImageEnhance.Brightness(img).enhance(float(rng.choice([0.6, 0.7, 1.3, 1.45])))
        elif which == 1:
            out = ImageEnhance.Color(img).enhance(float(rng.choice([0.0, 0.3, 1.8, 2.2])))
        else:
            r, g, b = (float(v) for v in rng.uniform(0.75, 1.25, 3))
            arr = np.asarray(img, dtype=np.float32) * np.array([r, g, b], dtype=np.float32)
            out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return jpeg(out, 85)
    if kind == "text":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        size = max(14, int(min(w, h) * float(rng.uniform(0.08, 0.14))))
        font = ImageFont.truetype(FONT, size)
        for _ in range(int(rng.integers(1, 4))):
            text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
            x, y = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h - size)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.text(
                (x, y), text.upper(), fill=colour, font=font, stroke_width=2, stroke_fill=(0, 0, 0)
            )
        return jpeg(out, 85)
    if kind == "border":
        frac = float(rng.uniform(0.08, 0.25))
        if rng.random() < 0.5:  # letterbox to a square
            side = int(max(w, h) * (1 + frac))
            canvas = Image.new("RGB", (side, side), (0, 0, 0))
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        else:
            px, py = int(w * frac / 2), int(h * frac / 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            canvas = ImageOps.expand(img, border=(px, py, px, py), fill=colour)
        return jpeg(canvas, 85)
    raise ValueError(kind)


def _load_encoded(path: str) -> bytes | None:
    img = load_rgb(path)
    return None if img is None else jpeg(img, 95)


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _dedup(encoded: list[bytes]) -> np.ndarray:
    """Keep-mask over the images: one image per group of near-identical pixels."""
    import scipy.sparse
    from scipy.sparse.csgraph import connected_components

    from coyo_db.ingest.models.copy_descriptors import EffNetCopyDescriptor
    from coyo_db.ingest.phash import phash_bytes, phash_to_int

    hashes = np.array([phash_to_int(phash_bytes(data)) for data in encoded], dtype=np.uint64)
    descriptor = EffNetCopyDescriptor(size=128)  # small: this only merges near-identical images
    size = 128
    vectors = []
    for start in range(0, len(encoded), 64):
        chunk = encoded[start : start + 64]
        pixels = np.stack(
            [np.asarray(_decode(data).resize((size, size), Image.BICUBIC)) for data in chunk]
        )
        vectors.append(descriptor.describe(pixels))
    v = np.concatenate(vectors)
    sim = v @ v.T
    ham = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    linked = (sim >= 0.9) | (ham <= 8)
    np.fill_diagonal(linked, False)
    _, labels = connected_components(scipy.sparse.csr_matrix(linked), directed=False)
    keep = np.zeros(len(encoded), dtype=bool)
    _, first = np.unique(labels, return_index=True)
    keep[first] = True
    return keep


def build(out: Path, *, references: int = 200, seed: int = 0) -> dict:
    """Write the benchmark under `out` (cached: a manifest.json marks it complete)."""
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    rng = np.random.default_rng(seed)
    pool = collect_pool()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as workers:
        encoded = list(workers.map(_load_encoded, [item.path for item in pool], chunksize=16))
    loaded = [(item, data) for item, data in zip(pool, encoded, strict=True) if data is not None]
    # identical files (the same picture in two packages or languages) go first, cheaply
    digests: set[str] = set()
    unique = []
    for item, img in loaded:
        digest = hashlib.sha1(img).hexdigest()
        if digest not in digests:
            digests.add(digest)
            unique.append((item, img))
    keep = _dedup([data for _, data in unique])
    unique = [pair for pair, kept in zip(unique, keep, strict=True) if kept]
    photo = [i for i, (item, _) in enumerate(unique) if item.photo_like]
    chosen = set(rng.choice(photo, size=min(references, len(photo)), replace=False).tolist())
    refs = [i for i in photo if i in chosen]
    rng.shuffle(refs)
    distractors = [i for i in range(len(unique)) if i not in chosen]
    rng.shuffle(distractors)
    manifest: dict = {"references": [], "copies": [], "distractors": [], "pool": len(pool)}
    for split_index, split in enumerate(("dev", "test")):
        ref_dir, data_dir = out / split / "refs", out / split / "data"
        ref_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(refs[split_index::2]):
            item, data = unique[i]
            img = _decode(data)
            name = f"ref{n:04d}.jpg"
            (ref_dir / name).write_bytes(data)
            manifest["references"].append(
                {"split": split, "name": name, "source": item.path, "package": item.package}
            )
            for kind in TRANSFORMS:
                copy_name = f"copy-{n:04d}-{kind}.jpg"
                (data_dir / copy_name).write_bytes(transform(img, kind, rng))
                manifest["copies"].append(
                    {"split": split, "name": copy_name, "ref": name, "transform": kind}
                )
        for n, i in enumerate(distractors[split_index::2]):
            item, data = unique[i]
            name = f"distractor-{n:05d}.jpg"
            (data_dir / name).write_bytes(data)
            manifest["distractors"].append(
                {"split": split, "name": name, "source": item.path, "package": item.package}
            )
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


if __name__ == "__main__":
    import sys

    target = Path(__file__).parent / "out" / "audit-data"
    result = build(target)
    print(
        f"{len(result['references'])} references, {len(result['copies'])} copies, "
        f"{len(result['distractors'])} distractors under {target}",
        file=sys.stderr,
    )
