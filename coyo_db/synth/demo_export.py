"""The export and search part of `coyo-db demo`: a thresholded subset exported without
duplicates (and contaminated ids, when an audit ran), its manifest replayed, the images
exported as webdataset tars, and an image search that finds the original of a near-copy."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coyo_db.catalog import tables

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

MODEL = "effnet-lite0"
SUBSET_WHERE = "clip_similarity_vitb32 >= 0.3 AND aesthetic_score_laion_v2 >= 5.0"
FAMILY_COSINE = 0.9  # images closer than this to another are left out as queries
IMAGES_SQL = "SELECT url, text, id FROM pairs WHERE id IN (SELECT id FROM images)"


@dataclass
class ExportDemoResult:
    selected: int = 0
    exported: int = 0
    excluded_duplicates: int = 0
    excluded_contaminated: int = 0
    replay_same_ids: bool = False
    webdataset_samples: int = 0
    search_found_original: bool = False  # the near-copy's original ranked first
    search_score: float = 0.0
    search_query: Path | None = None  # the near-copy searched for
    search_original_id: int | None = None  # the id it copies
    export_path: Path | None = None


def run_export_demo(
    catalog: Catalog, data: Path, *, seed: int = 0, emit: Callable[[str], None]
) -> ExportDemoResult:
    from coyo_db.export.replay import replay_export
    from coyo_db.export.subset import export

    result = ExportDemoResult()
    exports = data / "exports"  # outside the catalog: an export never goes into its home
    subset = export(
        catalog, exports / "subset", where=SUBSET_WHERE, columns=["width", "height"], overwrite=True
    )
    emit(subset.line())
    emit(f"  manifest: {subset.manifest_path}")
    result.export_path = subset.path
    result.selected = subset.counts["selected"]
    result.exported = subset.rows
    excluded = {e["reason"]: e["excluded"] for e in subset.manifest["exclusions"]}
    result.excluded_duplicates = excluded.get("duplicates", 0)
    result.excluded_contaminated = excluded.get("contaminated", 0)

    replay = replay_export(catalog, subset.manifest_path)
    emit(replay.line())
    result.replay_same_ids = replay.same_ids

    if not catalog.has_table(tables.IMAGES.name):
        emit("no images in the catalog: webdataset export and image search skipped")
        return result
    tars = export(
        catalog,
        exports / "images-wds",
        sql=IMAGES_SQL,
        fmt="webdataset",
        samples_per_file=64,
        overwrite=True,
    )
    emit(tars.line())
    result.webdataset_samples = tars.rows
    _search_step(catalog, data, seed, emit, result)
    return result


def _search_step(
    catalog: Catalog,
    data: Path,
    seed: int,
    emit: Callable[[str], None],
    result: ExportDemoResult,
) -> None:
    from coyo_db.search.nearest import search
    from coyo_db.search.vector_index import build_index

    if not catalog.has_table(tables.embeddings_name(MODEL)):
        emit(f"no {MODEL} embeddings: image search skipped")
        return
    meta = build_index(catalog, MODEL)
    emit(meta.line())
    original_id, query = _plant_query(catalog, data, seed)
    result.search_query, result.search_original_id = query, original_id
    found = search(catalog, image=query, k=3)
    top = found.ids[0] if found.ids else None
    result.search_found_original = top == original_id
    result.search_score = float(found.table["score"][0].as_py()) if found.ids else 0.0
    emit(
        f"search --image {query.name} (a 4/5-size, JPEG-60 copy of id {original_id}, which the "
        f"catalog never saw): top hit id {top} (score {result.search_score:.3f})"
        + (", the original" if result.search_found_original else ", NOT the original")
    )
    for row in found.table.select(["rank", "id", "score", "key"]).to_pylist():
        emit(f"  {row['rank']}. id {row['id']}  score {row['score']:.3f}  key {row['key']}")


def _plant_query(catalog: Catalog, data: Path, seed: int) -> tuple[int, Path]:
    """A near-copy (4/5 size, JPEG quality 60) of one ingested image that has no near-copy in
    the catalog (so that its original is the one right answer), written outside the catalog."""
    import numpy as np
    from PIL import Image

    from coyo_db.ingest.image_fetch import fetch_images
    from coyo_db.search.vector_index import load_table_vectors

    ids, vectors, _, _ = load_table_vectors(catalog, tables.embeddings_name(MODEL))
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    alone = np.flatnonzero(similarity.max(axis=1) < FAMILY_COSINE)
    pick = alone if len(alone) else np.arange(len(ids))
    original = int(ids[pick[seed % len(pick)]])
    row = catalog.sql(f"SELECT shard, member FROM images WHERE id = {original} LIMIT 1")
    location = (row["shard"][0].as_py(), row["member"][0].as_py())
    fetched = next(fetch_images([location]))
    image = Image.open(io.BytesIO(fetched.data or b"")).convert("RGB")
    image = image.resize((max(1, image.width * 4 // 5), max(1, image.height * 4 // 5)))
    path = data / "search-query.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=60)
    return original, path
