"""FAISS indexes over an `embeddings__<model>` table, stored in the catalog for `coyo-db search`.

Vectors are the table's image embeddings, L2-normalised float32 (one per id), searched by inner
product (= cosine similarity). The kind is chosen by size (``kind="auto"``):

- ``flat`` (exact, ``IndexFlatIP``) up to :data:`FLAT_MAX` vectors: a query scans them all in
  a few milliseconds, and nothing is approximate;
- ``ivf-flat`` (``IVF<nlist>,Flat``) above that while the raw vectors fit in
  :data:`IVF_FLAT_MAX_BYTES`: exact distances inside the `nprobe` lists searched;
- ``ivf-pq`` (``IVF<nlist>,PQ<m>``) above that: ``m`` bytes per vector (``m = dim / 8``
  sub-quantizers of 8 bits), so 700M x 512-d fits in ~45 GB. Each query re-ranks its
  ``k * 16`` (:data:`RERANK`) best PQ candidates with their stored vectors, read back from the
  table by row: PQ alone ranks near neighbours poorly (recall@10 ~0.2 at 1M x 512-d in
  bench/bench_search.py), 4 k candidates gave 0.51 and 16 k 0.88.

``nlist = clamp(round(sqrt(n)), 16, 65536)`` lists, trained by k-means (FAISS, fixed seed) on
a seeded sample of at most 64 vectors per list (every vector when the table has fewer);
``nprobe`` defaults to ``max(8, nlist // 16)``. IVF builds never hold the whole table: they
read the ids first, train on the sample, then add the vectors ``batch_size`` rows at a time,
so memory is the sample plus one batch plus the index. With GPUs (a
faiss build that has them), training and adding run on all of them; the stored index is a
CPU index either way.

A built index lives in ``<home>/indexes/<model slug>/``: ``index.faiss``, ``ids.npy`` (the id
of each vector position), ``rows.npy`` (its row in the table, for re-ranking) and
``meta.json`` (model, table, table version, count, kind, parameters, time).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coyo_db.catalog import tables
from coyo_db.dedup.semantic import take_rows
from coyo_db.errors import InputError, MissingExtraError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("auto", "flat", "ivf-flat", "ivf-pq")
FLAT_MAX = 200_000
IVF_FLAT_MAX_BYTES = 4 << 30
MIN_LISTS, MAX_LISTS = 16, 65_536
TRAIN_POINTS_PER_LIST = 64
RERANK = 16
INDEXES_DIR = "indexes"
SEED = 1234


def faiss_module() -> Any:
    try:
        import faiss
    except ModuleNotFoundError:
        raise MissingExtraError("faiss-cpu", "index") from None
    return faiss


@dataclass
class IndexMeta:
    """What `meta.json` records about a built index."""

    model: str
    table: str
    table_version: int
    count: int
    dim: int
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    metric: str = "inner_product"
    device: str = "cpu"
    built_at: str = ""
    seconds: float = 0.0
    tool_version: str = ""

    def line(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"built a {self.kind} index of {self.count:,} {self.dim}-d vectors from "
            f"{self.table} (version {self.table_version}{', ' + params if params else ''}) "
            f"on the {self.device} in {self.seconds:.1f} s"
        )


def index_dir(catalog: Catalog, model: str) -> Path:
    return catalog.home / INDEXES_DIR / tables.slug(model)


def choose_kind(n: int, dim: int) -> str:
    """The index kind `auto` picks for `n` vectors of `dim` dimensions."""
    if n <= FLAT_MAX:
        return "flat"
    if n * dim * 4 <= IVF_FLAT_MAX_BYTES:
        return "ivf-flat"
    return "ivf-pq"


def list_count(n: int) -> int:
    return int(min(MAX_LISTS, max(MIN_LISTS, round(np.sqrt(max(n, 1))))))


def pq_subquantizers(dim: int) -> int:
    """The largest divisor of `dim` not above dim / 8 (8 dimensions per byte of code)."""
    target = max(1, dim // 8)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def default_nprobe(nlist: int) -> int:
    return min(nlist, max(8, nlist // 16))


def build_index(
    catalog: Catalog,
    model: str,
    *,
    kind: str = "auto",
    nlist: int | None = None,
    pq_m: int | None = None,
    nprobe: int | None = None,
    gpu: bool | None = None,
    batch_size: int = 65_536,
) -> IndexMeta:
    """Build the index of `model`'s image vectors and store it in the catalog (replacing any
    earlier one). `gpu` None uses GPUs when faiss has them; IVF kinds add the vectors
    `batch_size` rows at a time. Logged in `runs` as ``index build``."""
    from coyo_db.catalog.runs import recorded_run

    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {batch_size}")
    faiss = faiss_module()
    options = {"kind": kind, "nlist": nlist, "pq_m": pq_m, "nprobe": nprobe, "gpu": gpu}
    with recorded_run(catalog, "index build", {"model": model, **options}) as run:
        meta = _build_index(faiss, catalog, model, options, batch_size)
        run.counts(rows_read=meta.count, rows_written=meta.count)
    return meta


def _build_index(
    faiss: Any, catalog: Catalog, model: str, options: dict[str, Any], batch_size: int
) -> IndexMeta:
    from coyo_db.export.manifest import utc_now
    from coyo_db.version import __version__

    kind, nlist, pq_m = options["kind"], options["nlist"], options["pq_m"]
    nprobe, gpu = options["nprobe"], options["gpu"]
    started = time.perf_counter()
    table = tables.embeddings_name(model)
    if not catalog.has_table(table):
        raise InputError(
            f"the catalog has no embeddings table {table!r}; "
            f"run coyo-db ingest images --embed {model} first"
        )
    dataset, ids, rows = table_ids(catalog, table)
    n, dim = len(ids), dataset.schema.field("image_embedding").type.list_size
    if n == 0:
        raise InputError(f"{table} holds no image vectors to index")
    chosen = choose_kind(n, dim) if kind == "auto" else kind
    params: dict[str, Any] = {}
    if chosen == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        lists = min(nlist or list_count(n), n)
        params["nlist"] = lists
        if chosen == "ivf-pq":
            m = pq_m or pq_subquantizers(dim)
            if dim % m:
                raise InputError(f"--pq-m {m} does not divide the dimension {dim}")
            params["pq_m"] = m
            params["rerank"] = RERANK
            factory = f"IVF{lists},PQ{m}"
        else:
            factory = f"IVF{lists},Flat"
        params["nprobe"] = min(lists, nprobe or default_nprobe(lists))
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        ivf.cp.seed = SEED
        ivf.nprobe = params["nprobe"]
        if chosen == "ivf-pq":
            # polysemous codes serve Hamming pre-filtering, which search does not use; their
            # training is the slowest part of the build
            faiss.downcast_index(ivf).do_polysemous_training = False
    use_gpu = faiss.get_num_gpus() > 0 if gpu is None else gpu
    device = "cpu"
    if chosen == "flat":
        index.add(read_vectors(dataset, rows, dim, batch_size))
    else:
        sample = training_positions(n, lists * TRAIN_POINTS_PER_LIST)
        working = index
        if use_gpu and faiss.get_num_gpus() > 0:
            device = f"{faiss.get_num_gpus()} GPU(s)"
            working = faiss.index_cpu_to_all_gpus(index)
        working.train(read_vectors(dataset, rows[sample], dim, batch_size))
        # ascending table rows read back in order; each vector's FAISS id is its position in
        # the sorted id array, which is what search maps back through ids.npy / rows.npy
        order = np.argsort(rows, kind="stable")
        for at in range(0, n, batch_size):
            positions = order[at : at + batch_size]
            batch = _unit(take_rows(dataset, rows[positions], ["image_embedding"]), dim)
            working.add_with_ids(batch, positions.astype(np.int64))
        if working is not index:
            index = faiss.index_gpu_to_cpu(working)
    meta = IndexMeta(
        model=model,
        table=table,
        table_version=dataset.version,
        count=n,
        dim=dim,
        kind=chosen,
        params=params,
        device=device,
        built_at=utc_now(),
        seconds=round(time.perf_counter() - started, 3),
        tool_version=__version__,
    )
    _store(index_dir(catalog, model), index, ids, rows, meta)
    log.info(meta.line())
    return meta


def table_ids(
    catalog: Catalog, table: str, version: int | None = None
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The dataset read, its ids with an image vector (unique, sorted) and the table row (offset
    in scan order, for ``take``) of each id's first occurrence; reads no vectors."""
    if not catalog.has_table(table):
        raise InputError(f"the catalog has no embeddings table {table!r}")
    dataset = catalog.dataset(table, version)
    if "image_embedding" not in dataset.schema.names:
        raise InputError(f"{table!r} holds no image_embedding column to index")
    scanned = dataset.to_table(columns=["id", "_rowoffset"], filter="image_embedding IS NOT NULL")
    offsets = scanned["_rowoffset"].to_numpy().astype(np.int64)
    order = np.argsort(offsets, kind="stable")
    offsets = offsets[order]
    ids = scanned["id"].to_numpy()[order]
    ids, first = np.unique(ids, return_index=True)  # an image ingested twice: its first row
    return dataset, ids, offsets[first]


def training_positions(n: int, sample: int) -> np.ndarray:
    """Positions (ascending) of a seeded sample of at most `sample` of `n` vectors: all of
    them when `n` is no larger, so a small table trains on exactly what it holds."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(SEED)
    return np.sort(rng.choice(n, sample, replace=False)).astype(np.int64)


def read_vectors(dataset: Any, rows: np.ndarray, dim: int, batch_size: int) -> np.ndarray:
    """L2-normalised float32 vectors of the distinct table `rows`, in the order given."""
    order = np.argsort(rows, kind="stable")
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for at in range(0, len(rows), batch_size):
        part = order[at : at + batch_size]
        vectors[part] = _unit(take_rows(dataset, rows[part], ["image_embedding"]), dim)
    return vectors


def _unit(taken: Any, dim: int) -> np.ndarray:
    column = taken["image_embedding"]
    vectors = np.empty((len(column), dim), dtype=np.float32)
    at = 0
    for chunk in column.chunks:
        part = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        vectors[at : at + len(part)] = part
        at += len(part)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.where(norms > 0, norms, 1.0)
    return vectors


def load_table_vectors(
    catalog: Catalog, table: str, version: int | None = None, batch_size: int = 65_536
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Ids (unique, sorted), their L2-normalised float32 image vectors, the table row (offset in
    scan order, for ``take``) of each, and the table version read (all in memory)."""
    dataset, ids, rows = table_ids(catalog, table, version)
    dim = dataset.schema.field("image_embedding").type.list_size
    return ids, read_vectors(dataset, rows, dim, batch_size), rows, dataset.version


def _store(folder: Path, index: Any, ids: np.ndarray, rows: np.ndarray, meta: IndexMeta) -> None:
    import shutil
    import uuid

    faiss = faiss_module()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        faiss.write_index(index, str(staging / "index.faiss"))
        np.save(staging / "ids.npy", ids.astype(np.int64))
        np.save(staging / "rows.npy", rows.astype(np.int64))
        (staging / "meta.json").write_text(json.dumps(asdict(meta), indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@dataclass
class LoadedIndex:
    """An index read back: the FAISS index, the id and table row of each position, its meta."""

    index: Any
    ids: np.ndarray
    rows: np.ndarray
    meta: IndexMeta


def built_models(catalog: Catalog) -> list[str]:
    """Models with a built index in the catalog."""
    root = catalog.home / INDEXES_DIR
    models = []
    for meta in sorted(root.glob("*/meta.json")):
        models.append(json.loads(meta.read_text())["model"])
    return models


def load_index(catalog: Catalog, model: str | None = None) -> LoadedIndex:
    """The stored index of `model` (or of the only model indexed when None)."""
    if model is None:
        models = built_models(catalog)
        if not models:
            raise InputError("the catalog has no vector index; run coyo-db index build --model M")
        if len(models) > 1:
            raise InputError(f"several indexes ({', '.join(models)}); choose one with --model")
        model = models[0]
    folder = index_dir(catalog, model)
    if not (folder / "meta.json").is_file():
        raise InputError(f"no index for {model!r}; run coyo-db index build --model {model}")
    faiss = faiss_module()
    meta = IndexMeta(**json.loads((folder / "meta.json").read_text()))
    index = faiss.read_index(str(folder / "index.faiss"))
    return LoadedIndex(index, np.load(folder / "ids.npy"), np.load(folder / "rows.npy"), meta)
