"""pHash throughput against imagehash, and the fast mode's agreement with the exact one.

Baseline: ``str(imagehash.phash(Image.open(BytesIO(data))))`` per image, COYO's own recipe.
Contenders, on the same encoded images in the same process, one core:

- coyo-db exact, batched: ``phash_bytes_many(datas, "exact")`` (the DCTs as two matrix
  products for the whole batch); must equal imagehash on every image;
- coyo-db exact, one image at a time: ``phash_bytes(data)``;
- coyo-db fast: ``phash_bytes_many(datas, "fast")`` (JPEG draft decoding, progressive JPEGs
  from their DC scans alone).

Then the same images in N worker processes (N = the machine's cores, a warm
``ProcessPoolExecutor``, chunks of 50 images a task) for imagehash, exact and fast: ingest
decodes in worker processes, so equal parallelism is the comparison that counts there.

The images (cached in bench/out/) are seeded variations of scikit-image's photos and of
procedural pictures: random crops, flips, resizes to 400-1200 pixels on the long side (a few
smaller), encoded as JPEG (quality 30-95, three chroma subsamplings, some progressive), PNG
(some palette), WebP and GIF. Timings: medians of interleaved runs over chunks of 200 images,
summed per format group.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# One core for every contender: the batched DCT must not borrow BLAS threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, machine, median_times, save

CONTENDERS = ("imagehash", "exact", "exact_per_image", "fast")
CHUNK = 200
TASK = 50  # images per task in the worker processes
GROUPS = ("jpeg_baseline", "jpeg_progressive", "other")
FORMATS = (
    ("jpeg", 0.80, "jpg"),
    ("png", 0.12, "png"),
    ("webp", 0.05, "webp"),
    ("gif", 0.03, "gif"),
)


def _sources():  # type: ignore[no-untyped-def]
    from PIL import Image
    from skimage import data

    colour = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "colorwheel",
    ]
    grey = ["camera", "moon", "brick", "grass", "gravel", "coins", "clock", "page", "text"]
    images = {name: Image.fromarray(getattr(data, name)()) for name in colour + grey}
    images["motorcycle"] = Image.fromarray(data.stereo_motorcycle()[0])
    images["logo"] = Image.fromarray(data.logo())  # RGBA
    return images


def _picture(rng: np.random.Generator, width: int, height: int):  # type: ignore[no-untyped-def]
    """A procedural picture: a vertical gradient, some noise, a few flat shapes."""
    from PIL import Image, ImageDraw

    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    pixels += rng.normal(0, rng.uniform(0, 8), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 10 + 1, width // 2 + 2))
        y1 = y0 + int(rng.integers(height // 10 + 1, height // 2 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    return image


def make_corpus(n: int, seed: int) -> list[tuple[str, bytes]]:
    """`n` seeded (format, encoded bytes) pairs, web-like: mostly JPEGs of 400-1200 px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = _sources()
    names = sorted(sources)
    colour = [name for name in names if sources[name].mode == "RGB"]
    filters = [Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BILINEAR]
    cumulative = np.cumsum([share for _, share, _ in FORMATS])
    corpus = []
    for _ in range(n):
        if rng.random() < 0.12:
            image = _picture(rng, int(rng.integers(400, 1200)), int(rng.integers(400, 1200)))
        else:
            pool = colour if rng.random() < 0.8 else names
            image = sources[pool[int(rng.integers(len(pool)))]]
            width, height = image.size
            cw = max(8, int(width * rng.uniform(0.4, 1)))
            ch = max(8, int(height * rng.uniform(0.4, 1)))
            x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
            image = image.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            long_side = int(
                rng.integers(400, 1200) if rng.random() < 0.92 else rng.integers(32, 400)
            )
            scale = long_side / max(cw, ch)
            size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
            image = image.resize(size, filters[int(rng.integers(len(filters)))])
        kind = FORMATS[int(np.searchsorted(cumulative, rng.random() * cumulative[-1]))][0]
        buffer = io.BytesIO()
        if kind == "jpeg":
            image = image if image.mode in ("RGB", "L") else image.convert("RGB")
            image.save(
                buffer,
                "JPEG",
                quality=int(rng.integers(30, 96)),
                subsampling=int(rng.integers(0, 3)),
                progressive=bool(rng.random() < 0.2),
            )
        elif kind == "png":
            if rng.random() < 0.3:
                image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            image.save(buffer, "PNG")
        elif kind == "webp":
            image.save(buffer, "WEBP", quality=int(rng.integers(50, 95)))
        else:
            image.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "GIF")
        corpus.append((kind, buffer.getvalue()))
    return corpus


def load_corpus(n: int, seed: int) -> list[tuple[str, bytes]]:
    """The corpus, generated once and cached as a tar under bench/out/."""
    path = OUT / f"phash-corpus-{n}-{seed}.tar"
    extension = {kind: ext for kind, _, ext in FORMATS}
    kinds = {ext: kind for kind, ext in extension.items()}
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        corpus = make_corpus(n, seed)
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for index, (kind, data) in enumerate(corpus):
                info = tarfile.TarInfo(f"{index:06d}.{extension[kind]}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        partial.rename(path)
        return corpus
    with tarfile.open(path) as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name)
        return [(kinds[m.name.rsplit(".", 1)[1]], tar.extractfile(m).read()) for m in members]  # type: ignore[union-attr]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between two uint64 arrays."""
    bits = np.unpackbits(np.ascontiguousarray(a ^ b).view(np.uint8).reshape(len(a), 8), axis=1)
    return bits.sum(axis=1)


def agreement(distance: np.ndarray) -> dict:
    histogram = np.bincount(np.minimum(distance, 9), minlength=10)
    return {
        "images": len(distance),
        "equal_share": round(float(np.mean(distance == 0)), 4),
        "mean_hamming": round(float(distance.mean()), 4),
        "within_2_share": round(float(np.mean(distance <= 2)), 4),
        "within_4_share": round(float(np.mean(distance <= 4)), 4),
        "max_hamming": int(distance.max()),
        "histogram_0_to_9plus": [int(v) for v in histogram],
    }


def reencode_noise(datas: list[bytes], quality: int) -> np.ndarray:
    """Hamming distances of exact pHashes before and after a JPEG re-encode: pHash's own noise."""
    from PIL import Image

    from coyo_db.ingest.phash import phash_bytes_many

    again = []
    for data in datas:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).convert("RGB").save(buffer, "JPEG", quality=quality)
        again.append(buffer.getvalue())
    return hamming(phash_bytes_many(datas), phash_bytes_many(again))


def report(
    title: str, timings: dict[str, dict[str, float]], counts: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Print images/s and the ratio to imagehash per group; return both, rounded."""
    names = list(next(iter(timings.values())))
    print(f"\n{title}\n{'images/s':>24} " + " ".join(f"{n[:10]:>10}" for n in names))
    rates = {}
    for group, times in timings.items():
        rates[group] = {name: round(counts[group] / s, 1) for name, s in times.items()}
        ratios = {name: times["imagehash"] / s for name, s in times.items()}
        rates[group].update({f"{name}_ratio": round(r, 3) for name, r in ratios.items()})
        print(
            f"{group + f' ({counts[group]})':>24} "
            + " ".join(f"{rates[group][n]:>10,.0f}" for n in names)
            + f"\n{'ratio vs imagehash':>24} "
            + " ".join(f"{ratios[n]:>10.2f}" for n in names)
        )
    return rates


def imagehash_hex(batch: list[bytes]) -> list[str]:
    """The baseline: imagehash's pHash of each encoded image."""
    import imagehash
    from PIL import Image

    return [str(imagehash.phash(Image.open(io.BytesIO(data)))) for data in batch]


def coyo_hex(batch: list[bytes], mode: str) -> list[str]:
    """coyo-db's pHashes of a batch as hex strings, the same output as the baseline's."""
    from coyo_db.ingest.phash import phash_bytes_many, uint64_to_phash_hex

    return uint64_to_phash_hex(phash_bytes_many(batch, mode)).to_pylist()  # type: ignore[arg-type]


def _quiet_worker() -> None:
    warnings.simplefilter("ignore")


def parallel_times(pool: ProcessPoolExecutor, batch: list[bytes], repeats: int) -> dict[str, float]:
    """Wall time of each contender hashing `batch` in the pool; medians of interleaved runs."""
    tasks = [batch[i : i + TASK] for i in range(0, len(batch), TASK)]
    contenders = {
        "imagehash": lambda: list(pool.map(imagehash_hex, tasks)),
        "exact": lambda: list(pool.map(coyo_hex, tasks, ["exact"] * len(tasks))),
        "fast": lambda: list(pool.map(coyo_hex, tasks, ["fast"] * len(tasks))),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for run in range(repeats + 1):  # the first run warms the workers up
        for name, fn in contenders.items():
            started = time.perf_counter()
            fn()
            if run:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    from coyo_db.ingest.phash import phash_bytes, phash_bytes_many, uint64_to_phash_hex

    warnings.simplefilter("ignore")  # Pillow's palette-transparency notes, same for all
    print(machine())
    started = time.perf_counter()
    corpus = load_corpus(args.images, args.seed)
    print(f"corpus: {len(corpus)} images ready in {time.perf_counter() - started:.1f} s")

    def group_of(kind: str, data: bytes) -> str:
        if kind != "jpeg":
            return "other"
        progressive = Image.open(io.BytesIO(data)).info.get("progressive")
        return "jpeg_progressive" if progressive else "jpeg_baseline"

    labels = [group_of(kind, data) for kind, data in corpus]
    pairs = list(zip(labels, (data for _, data in corpus), strict=True))
    groups = {g: [data for label, data in pairs if label == g] for g in GROUPS}
    datas = [data for _, data in corpus]
    summed = {"jpeg": ("jpeg_baseline", "jpeg_progressive"), "all": GROUPS}
    counts = {g: len(groups[g]) for g in GROUPS}
    counts.update({g: sum(counts[p] for p in parts) for g, parts in summed.items()})

    baseline = imagehash_hex(datas)
    exact = phash_bytes_many(datas, "exact")
    fast = phash_bytes_many(datas, "fast")
    exact_equal = int(np.sum(np.array(uint64_to_phash_hex(exact).to_pylist()) == baseline))
    print(f"exact mode equals imagehash on {exact_equal} / {len(datas)} images")
    if exact_equal != len(datas):
        raise SystemExit("exact mode differs from imagehash")

    # Interleaved in chunks of CHUNK images, so that a slow minute of the machine weighs on
    # every contender alike; a group's time is the sum of its chunks' medians.
    timings: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        batch = groups[group]
        timings[group] = dict.fromkeys(CONTENDERS, 0.0)
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            medians = median_times(
                {
                    "imagehash": lambda b=chunk: imagehash_hex(b),
                    "exact": lambda b=chunk: coyo_hex(b, "exact"),
                    "exact_per_image": lambda b=chunk: [phash_bytes(d) for d in b],
                    "fast": lambda b=chunk: coyo_hex(b, "fast"),
                },
                args.repeats,
            )
            for name, seconds in medians.items():
                timings[group][name] += seconds
    for group, parts in summed.items():
        timings[group] = {name: sum(timings[p][name] for p in parts) for name in CONTENDERS}
    rates = report("one process", timings, counts)

    workers = os.cpu_count() or 1
    parallel: dict[str, dict[str, float]] = {}
    with ProcessPoolExecutor(workers, initializer=_quiet_worker) as pool:
        for group in ("jpeg", "other"):
            parts = summed.get(group, (group,))
            batch = [data for part in parts for data in groups[part]]
            parallel[group] = parallel_times(pool, batch, args.repeats)
    parallel["all"] = {n: parallel["jpeg"][n] + parallel["other"][n] for n in parallel["jpeg"]}
    parallel_rates = report(f"{workers} worker processes", parallel, counts)

    kinds = np.array([kind for kind, _ in corpus])
    label = np.array(labels)
    distance = hamming(exact, fast)
    agree = {
        "all": agreement(distance),
        "jpeg": agreement(distance[kinds == "jpeg"]),
        **{g: agreement(distance[label == g]) for g in ("jpeg_baseline", "jpeg_progressive")},
    }
    jpegs = [data for kind, data in corpus if kind == "jpeg"][:500]
    noise = {f"jpeg_q{q}": agreement(reencode_noise(jpegs, q)) for q in (95, 75)}
    print("\nfast vs exact pHash (Hamming distance):")
    for name, stats in {**agree, **{f"exact, re-encoded {k}": v for k, v in noise.items()}}.items():
        print(
            f"  {name:>24}: equal {stats['equal_share']:.1%}, mean {stats['mean_hamming']:.2f}, "
            f"<=2 {stats['within_2_share']:.1%}, <=4 {stats['within_4_share']:.1%}, "
            f"max {stats['max_hamming']}  hist {stats['histogram_0_to_9plus']}"
        )

    path = save(
        "phash",
        {
            "images": len(datas),
            "formats": {kind: int(np.sum(kinds == kind)) for kind, _, _ in FORMATS},
            "seed": args.seed,
            "repeats": args.repeats,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "exact_equal_imagehash": exact_equal,
            "groups": counts,
            "seconds": {g: {n: round(s, 3) for n, s in t.items()} for g, t in timings.items()},
            "images_per_s": rates,
            "workers": workers,
            "parallel_seconds": {
                g: {n: round(s, 3) for n, s in t.items()} for g, t in parallel.items()
            },
            "parallel_images_per_s": parallel_rates,
            "fast_agreement": agree,
            "reencode_noise_exact": noise,
        },
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
