"""`coyo-db serve`: an image by id from a 10,000-sample tar, and a page of 100 thumbnails over
a 1M-row catalog, through the running web app over HTTP, as a browser asks for them.

- image by id: ``GET /img/<id>`` for random ids, each on a fresh server state (nothing
  cached), and on one running server (each id asked once, so its location is looked up in
  `images` every time): the member is read at the byte range ingest recorded. Baselines in
  the same run: the same call on a catalog without byte ranges (the
  fallback: a member index of the tar, built by the first request and then kept), and a scan
  of the tar up to the member (:func:`coyo_db.ingest.image_fetch.fetch_images`, what exports
  and audits use, which reads every member before it).
- page of thumbnails: ``GET /query`` with a SELECT over the 1M-row `pairs` joined to `images`
  (100 rows, thumbnail grid), then its 100 ``/thumb/<id>`` requests on 6 connections (as a
  browser does), on a fresh server (cold: thumbnails decoded from the tar) and again (warm:
  from the thumbnail cache).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import statistics
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save, synth_data

PAGE_SQL = (
    "SELECT p.id, p.text, p.clip_similarity_vitb32 FROM pairs AS p "
    "WHERE p.id IN (SELECT id FROM images) AND p.clip_similarity_vitb32 >= 0.25 ORDER BY p.id"
)


def write_tar(path: Path, ids: list[int], seed: int = 0) -> None:
    """`len(ids)` samples: a 320x240-ish JPEG, its caption and img2dataset-style JSON."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        for n, id_ in enumerate(ids):
            w, h = int(rng.integers(240, 400)), int(rng.integers(200, 320))
            base = rng.integers(0, 256, 3)
            ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, 3)
            noise = rng.normal(0, 12, (h, w, 3))
            pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, "JPEG", quality=85)
            key = f"{n:09d}"
            meta = json.dumps({"key": key, "id": int(id_), "status": "success"}).encode()
            for suffix, payload in (("jpg", out.getvalue()), ("txt", b"a picture"), ("json", meta)):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    tmp.rename(path)


def build(rows: int, samples: int) -> tuple[Path, Path, Path]:
    """(catalog with byte ranges, the same without them, the tar); cached in bench/out."""
    import pyarrow as pa

    from coyo_db.catalog import Catalog, tables
    from coyo_db.ingest.images import ingest_images
    from coyo_db.ingest.metadata import ingest_metadata

    home = OUT / f"home-serve-{rows}-{samples}"
    old = OUT / f"home-serve-{rows}-{samples}-old"
    shard = OUT / f"serve-{samples}.tar"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        catalog = Catalog(home, create=True)
        ingest_metadata(catalog, [synth_data(rows)])
        ids = catalog.sql(f"SELECT id FROM pairs ORDER BY hash(id) LIMIT {samples}")["id"]
        if not shard.exists():
            write_tar(shard, ids.to_pylist())
        ingest_images(catalog, [shard])
        (home / ".complete").write_text("ok")
    if not (old / ".complete").exists():  # a catalog ingested before the byte ranges
        shutil.rmtree(old, ignore_errors=True)
        catalog = Catalog(old, create=True)
        schema = pa.schema([f for f in tables.IMAGES.schema if f.name != "data_offset"])
        images = Catalog(home).dataset("images").to_table().drop_columns(["data_offset"])
        catalog.ensure_table("images", schema)
        catalog.append("images", images.cast(schema))
        (old / ".complete").write_text("ok")
    return home, old, shard


class Running:
    """The web app on a free local port, in this process (a fresh state per instance)."""

    def __init__(self, home: Path) -> None:
        import logging

        from werkzeug.serving import make_server

        from coyo_db.catalog import Catalog
        from coyo_db.serve.app import create_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.token = "bench"
        self.server = make_server("127.0.0.1", 0, create_app(Catalog(home), self.token), True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(self.base + path)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def image_latency(home: Path, ids: list[int]) -> list[float]:
    """Seconds of ``GET /img/<id>`` per id, each on a fresh server state."""
    times = []
    for id_ in ids:
        app = Running(home)
        start = time.perf_counter()
        data = app.get(f"/img/{id_}")
        times.append(time.perf_counter() - start)
        assert data[:3] == b"\xff\xd8\xff"
        app.close()
    return times


def running_latency(home: Path, ids: list[int]) -> tuple[float, list[float]]:
    """One server: its first request, then the other ids (none asked before, so each is
    looked up in `images`; for a catalog without byte ranges the first builds the index)."""
    app = Running(home)
    start = time.perf_counter()
    app.get(f"/img/{ids[0]}")
    first = time.perf_counter() - start
    times = []
    for id_ in ids[1:]:
        start = time.perf_counter()
        app.get(f"/img/{id_}")
        times.append(time.perf_counter() - start)
    app.close()
    return first, times


def scan_latency(home: Path, ids: list[int]) -> list[float]:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.image_fetch import fetch_images

    catalog = Catalog(home)
    times = []
    for id_ in ids:
        start = time.perf_counter()
        [row] = catalog.sql(f"SELECT shard, member FROM images WHERE id = {id_}").to_pylist()
        fetched = next(fetch_images([(row["shard"], row["member"])]))
        times.append(time.perf_counter() - start)
        assert fetched.data is not None
    return times


def page_of_thumbnails(home: Path) -> dict[str, float]:
    app = Running(home)
    query = "/query?" + urllib.parse.urlencode({"sql": PAGE_SQL, "view": "grid"})
    result = {}
    for state in ("cold", "warm"):
        start = time.perf_counter()
        page = app.get(query).decode()
        html_s = time.perf_counter() - start
        thumbs = sorted(set(re.findall(r'src="(/thumb/-?\d+)"', page)))
        assert len(thumbs) == 100, len(thumbs)
        with ThreadPoolExecutor(6) as pool:
            sizes = list(pool.map(lambda t: len(app.get(t)), thumbs))
        total = time.perf_counter() - start
        assert min(sizes) > 0
        result[f"{state}_html_s"], result[f"{state}_total_s"] = html_s, total
    app.close()
    return result


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--ids", type=int, default=40, help="random ids timed per contender")
    args = parser.parse_args()

    home, old, _ = build(args.rows, args.samples)
    from coyo_db.catalog import Catalog

    all_ids = Catalog(home).sql("SELECT id FROM images")["id"].to_pylist()
    ids = random.Random(0).sample(all_ids, args.ids)
    ranged = summary(image_latency(home, ids))
    first, rest = running_latency(home, ids)
    running = {"first_request_ms": 1000 * first, **summary(rest)}
    first, rest = running_latency(old, ids)
    fallback = {"first_request_ms": 1000 * first, **summary(rest)}
    scan = summary(scan_latency(home, ids[: max(5, args.ids // 4)]))
    page = page_of_thumbnails(home)
    result = {
        "rows": args.rows,
        "samples": args.samples,
        "image_by_id_byte_range_fresh_server": ranged,
        "image_by_id_byte_range_running_server": running,
        "image_by_id_fallback_member_index": fallback,
        "image_by_id_tar_scan_baseline": scan,
        "scan_over_byte_range": scan["median_ms"] / ranged["median_ms"],
        "page_of_100_thumbnails": page,
    }
    print(json.dumps(result, indent=2))
    print(f"saved {save('serve', result)}")


if __name__ == "__main__":
    main()
