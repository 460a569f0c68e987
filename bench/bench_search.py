"""`coyo-db search` latency and recall@10 against exact search (FAISS IndexFlatIP).

N clustered unit vectors (default 1M x 512, CLIP ViT-B/32's width: 2,000 centres, each vector a
centre plus Gaussian noise, cosine ~0.75 to its centre) are written to an
`embeddings__<model>` table as float16, indexed with `coyo-db index build` for each kind, and
queried one at a time with 200 fresh vectors from the same distribution through
:func:`coyo_db.search.nearest.knn` (the search itself: FAISS, the filter selector, IVF-PQ's exact
re-ranking from the table; no model, no metadata join). Recall@10 = |hits & exact top 10| / 10,
the exact top 10 from a brute-force IndexFlatIP over the same stored vectors. The "filter 10%"
rows give knn a precomputed set of ~10% of the ids (the selector's cost alone).

The "search --where" rows time what `coyo-db search --id N --where EXPR` runs end to end:
:func:`coyo_db.search.nearest.search` with a SQL condition over `pairs` (synthetic COYO rows
sharing the vectors' ids) that keeps ~10% of them, so the time includes loading the index,
running the SQL filter, the search and the metadata join of the hits. Its queries are stored
vectors (by id), fewer of them (`--where-queries`); recall is against the exact top 10 among
the rows the condition keeps.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save

MODEL = "bench-vectors"
CENTRES = 2_000
NOISE = 0.85
QUERIES = 200


def clustered(rng, n: int, dim: int, centres):  # type: ignore[no-untyped-def]
    import numpy as np

    which = rng.integers(0, len(centres), n)
    x = centres[which] + NOISE * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_home(rows: int, dim: int) -> Path:
    import numpy as np
    import pyarrow as pa

    from coyo_db.catalog import Catalog, schemas
    from coyo_db.catalog.tables import embeddings_name as embeddings_table

    home = OUT / f"home-search-{rows}-{dim}"
    if (home / ".complete").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    catalog = Catalog(home, create=True)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    np.save(home / "centres.npy", centres)
    name = embeddings_table(MODEL)
    catalog.ensure_table(name, schemas.embeddings_schema(dim, None))
    step = 250_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        vectors = clustered(rng, n, dim, centres).astype(np.float16)
        table = pa.table(
            {
                "id": pa.array(np.arange(start, start + n, dtype=np.int64) * 3 + 1),
                "image_embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.ravel(), pa.float16()), dim
                ),
            }
        )
        catalog.append(name, table)
    (home / ".complete").write_text("ok")
    return home


def add_pairs(home: Path, rows: int) -> None:
    """A `pairs` table whose ids are the vectors' ids (synthetic COYO rows), for --where."""
    import numpy as np
    import pyarrow as pa

    from coyo_db.catalog import Catalog
    from coyo_db.synth.metadata import synth_table

    if (home / ".pairs-complete").exists():
        return
    catalog = Catalog(home)
    step = 250_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        table = synth_table(n, seed=start)
        ids = pa.array(np.arange(start, start + n, dtype=np.int64) * 3 + 1)
        catalog.append("pairs", table.set_column(table.schema.get_field_index("id"), "id", ids))
    (home / ".pairs-complete").write_text("ok")


def where_runs(catalog, vectors, ids, count: int) -> dict:  # type: ignore[no-untyped-def]
    """`search(catalog, id=..., where=...)` end to end for one built index."""
    import numpy as np

    from coyo_db.search.nearest import filter_positions, search

    cut = catalog.sql("SELECT quantile_cont(clip_similarity_vitb32, 0.9) AS q FROM pairs")["q"][
        0
    ].as_py()
    where = f"clip_similarity_vitb32 >= {cut:.6f}"
    allowed = filter_positions(catalog, where, ids)
    rng = np.random.default_rng(2)
    picks = rng.choice(len(ids), count, replace=False)
    latencies, recalls = [], []
    for position in picks:
        keep = allowed[allowed != position]
        sims = vectors[keep] @ vectors[position]
        truth = set(ids[keep[np.argsort(-sims, kind="stable")[:10]]].tolist())
        started = time.perf_counter()
        result = search(catalog, id=int(ids[position]), k=10, model=MODEL, where=where)
        latencies.append(time.perf_counter() - started)
        recalls.append(len(truth & set(result.table["id"].to_pylist())) / 10)
    return {
        "where": where,
        "kept": len(allowed) / len(ids),
        "queries": count,
        "median_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "recall_at_10": float(np.mean(recalls)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--where-queries", type=int, default=20)
    args = parser.parse_args()

    import faiss
    import numpy as np

    from coyo_db.catalog import Catalog
    from coyo_db.catalog.tables import embeddings_name as embeddings_table
    from coyo_db.search.nearest import knn
    from coyo_db.search.vector_index import build_index, load_index, load_table_vectors

    home = build_home(args.rows, args.dim)
    add_pairs(home, args.rows)
    catalog = Catalog(home)
    ids, vectors, _, _ = load_table_vectors(catalog, embeddings_table(MODEL))
    rng = np.random.default_rng(1)
    queries = clustered(rng, QUERIES, args.dim, np.load(home / "centres.npy"))
    allowed = np.flatnonzero(rng.random(len(ids)) < 0.10).astype(np.int64)

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(vectors)
    started = time.perf_counter()
    _, truth = exact.search(queries, 10)
    batch_exact = (time.perf_counter() - started) / QUERIES
    filtered_truth = np.stack(
        [allowed[np.argsort(-(vectors[allowed] @ q), kind="stable")[:10]] for q in queries]
    )
    del exact

    def run(loaded, label: str, nprobe=None, positions=None, rerank=True):  # type: ignore[no-untyped-def]
        want = truth if positions is None else filtered_truth
        latencies, recalls = [], []
        for q, query in enumerate(queries):
            started = time.perf_counter()
            _, found = knn(
                loaded,
                query[None],
                10,
                positions=positions,
                nprobe=nprobe,
                catalog=catalog if rerank else None,
            )
            latencies.append(time.perf_counter() - started)
            recalls.append(len(set(found[0].tolist()) & set(want[q].tolist())) / 10)
        row = {
            "median_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "recall_at_10": float(np.mean(recalls)),
        }
        print(
            f"  {label:34s} median {row['median_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms  "
            f"recall@10 {row['recall_at_10']:.3f}"
        )
        return row

    results: dict[str, dict] = {}
    print(f"{len(ids):,} x {args.dim}-d vectors; {QUERIES} queries one at a time")
    print(f"  exact IndexFlatIP, batched             {1000 * batch_exact:8.2f} ms / query")
    for kind in ("flat", "ivf-flat", "ivf-pq"):
        meta = build_index(catalog, MODEL, kind=kind)
        loaded = load_index(catalog, MODEL)
        print(meta.line())
        entry: dict = {"build_s": meta.seconds, "params": meta.params}
        nprobe = int(meta.params.get("nprobe", 0))
        entry["default"] = run(loaded, f"{kind} (nprobe {nprobe or '-'})")
        if kind != "flat":
            entry["nprobe x4"] = run(loaded, f"{kind} (nprobe {4 * nprobe})", nprobe=4 * nprobe)
        if kind == "ivf-pq":
            entry["no rerank"] = run(loaded, "ivf-pq without re-ranking", rerank=False)
        entry["filter 10%"] = run(loaded, f"{kind}, knn keeping 10% ids", positions=allowed)
        if args.where_queries:
            row = where_runs(catalog, vectors, ids, args.where_queries)
            entry["search --where"] = row
            print(
                f"  {kind + ', search --where (end to end)':34s} median {row['median_ms']:8.2f} ms"
                f"  p95 {row['p95_ms']:8.2f} ms  recall@10 {row['recall_at_10']:.3f}"
                f"  ({row['kept']:.0%} kept)"
            )
        results[kind] = entry
        del loaded
    save(
        "search",
        {
            "rows": len(ids),
            "dim": args.dim,
            "queries": QUERIES,
            "exact_batched_ms_per_query": 1000 * batch_exact,
            "kinds": results,
        },
    )


if __name__ == "__main__":
    main()
