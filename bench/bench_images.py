"""End-to-end image ingest images/s against the model alone, per model, on this machine.

Synthetic web-sized JPEGs (256-640 px, webdataset shards) go through `ingest_images` (read,
decode and pHash in worker processes, batches, model, Lance commits). The baseline is the
model alone on already-preprocessed uint8 batches of the same size: the ratio end-to-end /
model-only says how much of the model's speed the pipeline delivers, and the time shares say
whether decode or the model is the bottleneck.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save


def model_only(spec: str, images: int, batch_size: int, device: str) -> float:
    import numpy as np
    import torch

    from coyo_db.ingest.registry import load_model

    model = load_model(spec)
    model.to(device)
    size = model.preprocess.size
    batch = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    )
    if device.startswith("cuda"):
        batch = batch.to(device)
    model.embed_images(batch)  # warm-up
    batches = max(1, images // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        model.embed_images(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--models", nargs="+", default=["effnet-lite0", "open_clip:ViT-B-32:random"]
    )
    args = parser.parse_args()

    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    data = OUT / f"images-{args.images}"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        write_image_shards(data, list(range(args.images)), per_shard=128, near_copy_share=0.0)
        (data / ".complete").write_text("ok")
    shards = sorted(data.glob("*.tar"))

    results = {}
    for spec in args.models:
        home = OUT / "images-home"
        shutil.rmtree(home, ignore_errors=True)
        summary = ingest_images(
            Catalog(home, create=True),
            shards,
            embed=[spec],
            device=args.device,
            batch_size=args.batch_size,
        )
        e2e = summary.rows_written / summary.seconds
        alone = model_only(spec, args.images, args.batch_size, args.device)
        busy = sum(summary.timings.values())
        shares = {k: v / busy for k, v in summary.timings.items()}
        results[spec] = {
            "end_to_end_images_per_s": e2e,
            "model_only_images_per_s": alone,
            "ratio": e2e / alone,
            "time_shares": shares,
        }
        print(
            f"{spec:28s} end-to-end {e2e:8.1f} img/s   model only {alone:8.1f} img/s   "
            f"ratio {e2e / alone:.2f}   time: "
            + ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
        )
        shutil.rmtree(home, ignore_errors=True)
    save(f"images-{args.device}", {"images": args.images, "device": args.device, "models": results})


if __name__ == "__main__":
    main()
