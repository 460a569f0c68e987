"""`coyo-db search`: nearest neighbours of a text, an image file or a stored id, with metadata.

The query vector comes from

- ``text``: the model's text tower (open_clip models; a model without one, like
  ``effnet-lite0``, is refused with a clear message);
- ``image``: the file decoded and preprocessed as ingest does, through the model's image tower;
- ``id``: the vector the embeddings table holds for that id (the id itself is left out of
  its own results).

Scores are cosine similarities (inner products of L2-normalised vectors). Filter ``where``:
a SQL condition over ``pairs`` (over ``images`` when the catalog has no pairs) selects the ids
a result may have; FAISS applies it inside the search (an ``IDSelectorBatch`` in the search
parameters), so the k results are the k nearest *among the selected ids*, never fewer because
of post-filtering. For IVF indexes, ``nprobe`` grows as the selected share shrinks
(``nprobe / share``, at most every list), so a narrow filter still finds k neighbours. For IVF-PQ
the best ``k * rerank`` candidates are re-scored exactly with their stored vectors.

Results are joined with ``pairs`` (url, text) and ``images`` (key, caption, shard, member).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.search.vector_index import LoadedIndex

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """The hits, best first, with metadata; `stale` when the table changed since the build."""

    table: pa.Table
    model: str
    kind: str
    seconds: float
    stale: bool = False
    index_version: int = 0
    table_version: int = 0
    candidates: int = 0  # ids the --where filter allowed (the whole index without one)

    @property
    def ids(self) -> list[int]:
        return self.table["id"].to_pylist()


def text_vector(model: Any, text: str) -> np.ndarray:
    from coyo_db.ingest.image_types import TextEmbedder

    if not isinstance(model, TextEmbedder):
        raise InputError(
            f"{model.name} has no text tower; search its index with --image or --id "
            "(text search needs a CLIP model, e.g. open_clip:ViT-B-32:...)"
        )
    return _as_numpy(model.embed_texts([text]))


def image_vector(model: Any, path: str | Path) -> np.ndarray:
    from coyo_db.ingest.decode import decode_record
    from coyo_db.ingest.image_types import ImageEmbedder, ImageRecord

    if not isinstance(model, ImageEmbedder):
        raise InputError(f"{model.name} has no image tower")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    record = ImageRecord(str(path.parent), path.name, path.stem, path.read_bytes())
    decoded = decode_record(record, [model.preprocess], phash=False)
    if decoded.error is not None:
        raise InputError(f"{path}: {decoded.error}")
    return _as_numpy(model.embed_images(decoded.pixels[model.preprocess][None]))


def stored_vector(
    catalog: Catalog, table: str, id_: int, loaded: LoadedIndex | None = None
) -> np.ndarray:
    """The stored vector of `id_`: taken by its row when the index `loaded` holds it (the
    table at the version the index was built from), else found by a scan of the table."""
    if loaded is not None:
        position = int(np.searchsorted(loaded.ids, int(id_)))
        if position < len(loaded.ids) and loaded.ids[position] == int(id_):
            dataset = catalog.dataset(table, loaded.meta.table_version)
            row = int(loaded.rows[position])
            taken = dataset.take([row], columns=["image_embedding"])["image_embedding"]
            vector = taken.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return vector.astype(np.float32).reshape(1, loaded.meta.dim)
    dataset = catalog.dataset(table)
    found = dataset.to_table(
        columns=["image_embedding"], filter=f"id = {int(id_)} AND image_embedding IS NOT NULL"
    )
    if found.num_rows == 0:
        raise InputError(f"{table} holds no image vector for id {int(id_)}")
    dim = dataset.schema.field("image_embedding").type.list_size
    vector = found["image_embedding"].chunk(0).flatten().to_numpy(zero_copy_only=False)[:dim]
    return vector.astype(np.float32).reshape(1, dim)


def _as_numpy(vectors: Any) -> np.ndarray:
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().float().cpu().numpy()
    return np.asarray(vectors, dtype=np.float32).reshape(1, -1)


def _normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def filter_positions(catalog: Catalog, where: str, ids: np.ndarray) -> np.ndarray:
    """Index positions whose id passes `where` (over pairs, else images): one SQL condition,
    run on a restricted connection (see :mod:`coyo_db.catalog.readonly`)."""
    from coyo_db.catalog.readonly import where_select

    pairs, images = tables.PAIRS.name, tables.IMAGES.name
    base = pairs if catalog.has_table(pairs) else images
    if not catalog.has_table(base):
        raise InputError("--where needs a pairs or images table to filter on")
    query = where_select(f"SELECT DISTINCT id FROM {base}", where)
    allowed = catalog.sql(query)["id"].to_numpy()
    allowed = np.unique(allowed[~np.isnan(allowed)] if allowed.dtype.kind == "f" else allowed)
    at = np.searchsorted(ids, allowed).clip(max=max(len(ids) - 1, 0))
    hit = ids[at] == allowed if len(ids) else np.zeros(0, bool)
    return at[hit].astype(np.int64)


def knn(
    loaded: LoadedIndex,
    query: np.ndarray,
    k: int,
    *,
    positions: np.ndarray | None = None,
    nprobe: int | None = None,
    catalog: Catalog | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of the `k` nearest vectors to each query row, best first, among
    `positions` when given; -1 positions pad rows with fewer hits."""
    from coyo_db.search.vector_index import faiss_module

    faiss = faiss_module()
    index, meta = loaded.index, loaded.meta
    query = np.ascontiguousarray(query, dtype=np.float32)
    fetch = k
    rerank = meta.kind == "ivf-pq" and catalog is not None
    if rerank:
        fetch = k * int(meta.params.get("rerank", 16))
    params = None
    selector = None
    if positions is not None:
        selector = faiss.IDSelectorBatch(positions)
    if meta.kind == "flat":
        if selector is not None:
            params = faiss.SearchParameters(sel=selector)
    else:
        probe = nprobe or int(meta.params.get("nprobe", 8))
        nlist = int(meta.params.get("nlist", probe))
        if positions is not None and meta.count:
            share = max(len(positions) / meta.count, 1e-9)
            probe = int(min(nlist, np.ceil(probe / share)))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=min(probe, nlist))
    fetch = min(fetch, meta.count if positions is None else len(positions))
    if fetch <= 0:
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    scores, found = index.search(query, fetch, params=params)
    if rerank:
        scores, found = _rerank(catalog, loaded, query, found, k)
    return scores[:, :k], found[:, :k]


def _rerank(
    catalog: Catalog, loaded: LoadedIndex, query: np.ndarray, found: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of the PQ candidates, read back from the table by row."""
    meta = loaded.meta
    dataset = catalog.dataset(meta.table, meta.table_version)
    out_scores = np.full((len(query), found.shape[1]), -np.inf, dtype=np.float32)
    out_found = np.full_like(found, -1)
    for q in range(len(query)):
        valid = found[q][found[q] >= 0]
        if not len(valid):
            continue
        taken = dataset.take(loaded.rows[valid].tolist(), columns=["image_embedding"])
        flat = taken["image_embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.astype(np.float32).reshape(len(valid), meta.dim)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        exact = vectors @ query[q]
        order = np.argsort(-exact, kind="stable")
        out_scores[q, : len(order)] = exact[order]
        out_found[q, : len(order)] = valid[order]
    return out_scores, out_found


def search(
    catalog: Catalog,
    *,
    text: str | None = None,
    image: str | Path | None = None,
    id: int | None = None,
    k: int = 10,
    model: str | None = None,
    where: str | None = None,
    nprobe: int | None = None,
) -> SearchResult:
    """The `k` nearest neighbours of one query (exactly one of `text`, `image`, `id`)."""
    from coyo_db.search.vector_index import load_index

    given = [x for x in (text, image, id) if x is not None]
    if len(given) != 1:
        raise InputError("search by exactly one of --text, --image or --id")
    if k < 1:
        raise InputError(f"-k must be at least 1, not {k}")
    started = time.perf_counter()
    loaded = load_index(catalog, model)
    meta = loaded.meta
    if image is not None and not Path(image).is_file():
        raise InputError(f"{image}: no such image file")
    if id is not None:
        query = stored_vector(catalog, meta.table, id, loaded)
    else:
        from coyo_db.ingest.registry import load_model

        encoder = load_model(meta.model)
        query = text_vector(encoder, text) if text is not None else image_vector(encoder, image)
    if query.shape[1] != meta.dim:
        raise InputError(f"the query vector has {query.shape[1]} dimensions, the index {meta.dim}")
    query = _normalise(query)
    positions = filter_positions(catalog, where, loaded.ids) if where else None
    if positions is not None and id is not None:
        positions = positions[loaded.ids[positions] != int(id)]
    want = k + 1 if id is not None and positions is None else k
    scores, found = knn(loaded, query, want, positions=positions, nprobe=nprobe, catalog=catalog)
    scores, found = scores[0], found[0]
    keep = found >= 0
    hit_ids = loaded.ids[found[keep]]
    hit_scores = scores[keep]
    if id is not None:
        mine = hit_ids != int(id)
        hit_ids, hit_scores = hit_ids[mine], hit_scores[mine]
    hit_ids, hit_scores = hit_ids[:k], hit_scores[:k]
    table = with_metadata(catalog, hit_ids, hit_scores)
    current = catalog.dataset(meta.table).version
    return SearchResult(
        table=table,
        model=meta.model,
        kind=meta.kind,
        seconds=time.perf_counter() - started,
        stale=current != meta.table_version,
        index_version=meta.table_version,
        table_version=current,
        candidates=meta.count if positions is None else len(positions),
    )


def with_metadata(catalog: Catalog, ids: np.ndarray, scores: np.ndarray) -> pa.Table:
    """Hits (rank, id, score) joined with pairs' url and text and images' key and location."""
    hits = pa.table(
        {
            "rank": pa.array(np.arange(1, len(ids) + 1), pa.int32()),
            "id": pa.array(ids, pa.int64()),
            "score": pa.array(scores, pa.float32()),
        }
    )
    columns = ["h.rank", "h.id", "h.score"]
    joins = []
    pairs, images = catalog.has_table(tables.PAIRS.name), catalog.has_table(tables.IMAGES.name)
    if pairs:
        columns += ["p.url", "p.text"]
        joins.append("LEFT JOIN pairs AS p ON p.id = h.id")
    if images:
        if not pairs:
            columns += ["i.url", "i.caption AS text"]
        columns += ["i.key", "i.shard", "i.member"]
        joins.append(
            "LEFT JOIN (SELECT * FROM images QUALIFY row_number() OVER "
            "(PARTITION BY id ORDER BY shard, member) = 1) AS i ON i.id = h.id"
        )
    query = f"SELECT {', '.join(columns)} FROM search_hits AS h {' '.join(joins)} ORDER BY h.rank"
    with catalog.connection() as con:
        con.register("search_hits", hits)
        return con.sql(query).to_arrow_table()
