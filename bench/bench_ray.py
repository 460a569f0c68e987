"""Ray engine against the local engine: images/s of `ingest images` on the same shards.

Synthetic web-sized JPEGs (webdataset shards of 128) through `ingest_images` with one model,
once with ``engine="local"`` (decode processes, the model in this process) and once with
``engine="ray"`` on a local Ray instance of this machine's cores (decode tasks, a model actor,
commits in the driver). The ratio Ray / local is the engine's overhead on one machine: what a
cluster must win back by having more machines. "cold" includes starting and stopping Ray (what
one CLI call pays), "warm" joins an instance already running (what a cluster job pays).
"local 1 decoder" is the local engine with one decode process, the split of the two cores the
Ray engine makes here (one decode task, one model actor).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, machine, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="effnet-lite0")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    data = OUT / f"images-{args.images}"
    if not (data / ".complete").exists():
        shutil.rmtree(data, ignore_errors=True)
        write_image_shards(data, list(range(args.images)), per_shard=128, near_copy_share=0.0)
        (data / ".complete").write_text("ok")
    shards = sorted(data.glob("*.tar"))
    home = OUT / "ray-home"

    def run(engine: str, workers: int | None = None) -> float:
        shutil.rmtree(home, ignore_errors=True)
        start = time.perf_counter()
        summary = ingest_images(
            Catalog(home, create=True),
            shards,
            embed=[args.model],
            batch_size=args.batch_size,
            engine=engine,
            workers=workers,
        )
        seconds = time.perf_counter() - start
        assert summary.rows_written == args.images, summary.line()
        return args.images / seconds

    rates: dict[str, list[float]] = {
        "local": [],
        "local 1 decoder": [],
        "ray cold": [],
        "ray warm": [],
    }
    for _ in range(args.repeats):
        rates["local"].append(run("local"))
        rates["local 1 decoder"].append(run("local", workers=1))
        rates["ray cold"].append(run("ray"))
        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            rates["ray warm"].append(run("ray"))
        finally:
            ray.shutdown()
    shutil.rmtree(home, ignore_errors=True)

    best = {name: max(values) for name, values in rates.items()}
    for name, value in best.items():
        print(
            f"{name:15s} {value:7.1f} img/s   ratio to local {value / best['local']:.2f}   "
            f"(runs: {', '.join(f'{v:.1f}' for v in rates[name])})"
        )
    save(
        "ray",
        {
            "machine": machine(),
            "images": args.images,
            "model": args.model,
            "batch_size": args.batch_size,
            "images_per_s": best,
            "runs": rates,
            "ratio_ray_cold_to_local": best["ray cold"] / best["local"],
            "ratio_ray_warm_to_local": best["ray warm"] / best["local"],
        },
    )


if __name__ == "__main__":
    main()
