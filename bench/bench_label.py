"""Labeling: images/s of `label_images` end to end against the model alone, and the top-1
agreement of effnet-lite0's labels with the known class of real photos.

Speed: synthetic web-sized JPEGs in webdataset shards are ingested (not timed), then labeled
with effnet-lite0 over ImageNet-21k at top-50 (read back from the shards, decode in worker
processes, model, top-k, Lance commits). The baseline is the labeler alone (`top_k` on
already-preprocessed uint8 batches of the same count): the ratio end-to-end / model-only says
how much of the model's speed the job delivers.

Quality: the photos that ship with scikit-image, matplotlib and scikit-learn whose subject is
an ImageNet-1k class, each with the classes that count as right (decided from what the photo
shows, before running the model), go through `label_batch` (the job's own decode and top-k).
Photos whose subject has no ImageNet-1k class are listed with the model's answer, not scored.

    python bench/bench_label.py [--images 256] [--device auto]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save

MODEL = "effnet-lite0"

# (photo, source, ImageNet-1k classes that count as right, what the photo shows)
KNOWN = [
    ("chelsea.png", "skimage", {281, 282, 283, 284, 285}, "a tabby cat (any domestic cat class)"),
    ("coffee.png", "skimage", {967, 968, 504}, "a cup of espresso on a saucer"),
    (
        "rocket.jpg",
        "skimage",
        {657, 744, 812},
        "a rocket on its launch pad (missile, space shuttle)",
    ),
    ("camera.png", "skimage", {872, 759}, "a cameraman with a camera on a tripod"),
    ("motorcycle_left.png", "skimage", {665, 670}, "a motorcycle (moped, motor scooter)"),
    ("clock_motion.png", "skimage", {892, 409}, "a clock (wall clock, analog clock)"),
    ("grace_hopper.jpg", "matplotlib", {652}, "Grace Hopper in naval uniform"),
    ("china.jpg", "sklearn", {698, 663, 832}, "a Chinese temple (palace, monastery, stupa)"),
]
# Real photos whose subject ImageNet-1k has no class for: the answer is shown, not scored.
UNSCORED = [
    ("astronaut.png", "skimage", "an astronaut in a spacesuit (no ImageNet-1k class)"),
    ("flower.jpg", "sklearn", "a flower close-up (no matching ImageNet-1k flower)"),
]


def photo_bytes(name: str, source: str) -> bytes:
    """The photo file's bytes, as its package ships it."""
    if source == "skimage":
        import skimage

        return (Path(skimage.__file__).parent / "data" / name).read_bytes()
    if source == "matplotlib":
        import matplotlib

        return (Path(matplotlib.get_data_path()) / "sample_data" / name).read_bytes()
    import sklearn.datasets

    return (Path(sklearn.datasets.__file__).parent / "images" / name).read_bytes()


def agreement(labeler, names: list[str]) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np

    from coyo_db.labels.label_stage import label_batch

    photos = [(n, s, ok, what) for n, s, ok, what in KNOWN]
    images = [photo_bytes(n, s) for n, s, _, _ in photos]
    result = label_batch(labeler, np.arange(len(images)), images, top_k=5, taxonomy="imagenet-1k")
    rows = result.labels.to_pylist()
    scored = []
    for (name, _, accepted, what), row in zip(photos, rows, strict=True):
        top5 = row["labels"]
        scored.append(
            {
                "photo": name,
                "shows": what,
                "top1": names[top5[0]],
                "prob": round(row["label_probs"][0], 3),
                "top1_right": top5[0] in accepted,
                "top5_right": bool(set(top5) & accepted),
            }
        )
    unscored_images = [photo_bytes(n, s) for n, s, _ in UNSCORED]
    extra = label_batch(
        labeler, np.arange(len(unscored_images)), unscored_images, top_k=1, taxonomy="imagenet-1k"
    ).labels.to_pylist()
    unscored = [
        {"photo": n, "shows": what, "top1": names[r["labels"][0]], "prob": r["label_probs"][0]}
        for (n, _, what), r in zip(UNSCORED, extra, strict=True)
    ]
    return {
        "photos": len(scored),
        "top1_agreement": sum(s["top1_right"] for s in scored) / len(scored),
        "top5_agreement": sum(s["top5_right"] for s in scored) / len(scored),
        "scored": scored,
        "unscored": unscored,
    }


def model_only(labeler, images: int, batch_size: int) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    size = labeler.preprocess.size
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    labeler.top_k(batch, 50)  # warm-up
    batches = max(1, images // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        labeler.top_k(batch, 50)
    return batches * batch_size / (time.perf_counter() - start)


def end_to_end(images: int, batch_size: int, device: str, workers: int | None) -> dict:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.labels.labeling import label_images
    from coyo_db.synth.images import write_image_shards

    folder = OUT / f"label-{images}"
    shutil.rmtree(folder, ignore_errors=True)
    shards, _ = write_image_shards(
        folder / "shards", list(range(images)), per_shard=max(1, images // 4), seed=0
    )
    catalog = Catalog(folder / "home", create=True)
    ingest_images(catalog, shards, workers=0)
    summary = label_images(
        catalog,
        MODEL,
        "imagenet-21k",
        top_k=50,
        batch_size=batch_size,
        device=device,
        workers=workers,
    )
    print(summary.line())
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "images": summary.rows_read,
        "seconds": round(summary.seconds, 2),
        "images_per_s": round(summary.rows_per_second, 2),
        "time_shares": {
            k: round(v / max(sum(summary.timings.values()), 1e-9), 3)
            for k, v in summary.timings.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)

    from coyo_db.ingest.models.classifiers import load_labeler
    from coyo_db.ingest.models.common import resolve_device
    from coyo_db.labels.taxonomy import load_taxonomy

    device = resolve_device(args.device)
    one_k = load_taxonomy("imagenet-1k")
    labeler = load_labeler(MODEL, "imagenet-1k", one_k)
    labeler.to(device)
    quality = agreement(labeler, one_k["name"].to_pylist())
    for row in quality["scored"]:
        mark = "ok " if row["top1_right"] else ("top5" if row["top5_right"] else "MISS")
        print(f"  {mark} {row['photo']:<17} -> {row['top1']} ({row['prob']:.2f}); {row['shows']}")
    for row in quality["unscored"]:
        print(f"  --   {row['photo']:<17} -> {row['top1']} ({row['prob']:.2f}); {row['shows']}")
    print(
        f"top-1 agreement {quality['top1_agreement']:.2f}, top-5 {quality['top5_agreement']:.2f}"
        f" on {quality['photos']} real photos"
    )

    labeler_21k = load_labeler(MODEL, "imagenet-21k", load_taxonomy("imagenet-21k"))
    labeler_21k.to(device)
    alone = model_only(labeler_21k, args.images, args.batch_size)
    job = end_to_end(args.images, args.batch_size, device, args.workers)
    ratio = job["images_per_s"] / alone
    print(
        f"{MODEL} on {device}: end to end {job['images_per_s']:.1f} images/s, model alone "
        f"{alone:.1f} images/s (baseline): ratio {ratio:.2f}"
    )
    path = save(
        f"label-{device.split(':')[0]}",
        {
            "model": MODEL,
            "device": device,
            "batch_size": args.batch_size,
            "model_only_images_per_s": round(alone, 2),
            "end_to_end": job,
            "ratio_end_to_end_vs_model": round(ratio, 3),
            "agreement": quality,
        },
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
