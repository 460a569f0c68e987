"""Vector index build and search: exact and IVF kinds, filters, metadata, the real model, CLI."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from coyo_db.catalog import schemas
from coyo_db.catalog.tables import embeddings_name as embeddings_table
from coyo_db.cli.app import app
from coyo_db.errors import InputError
from coyo_db.search.nearest import search
from coyo_db.search.vector_index import (
    build_index,
    choose_kind,
    load_index,
    pq_subquantizers,
)

MODEL = "effnet-lite0"
DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int = DIM, centres: int = 20) -> np.ndarray:
    """Unit vectors around a few centres (embeddings are clustered, not uniform)."""
    centre = unit(rng.standard_normal((centres, dim)))
    which = rng.integers(0, centres, n)
    return unit(centre[which] + 0.35 * rng.standard_normal((n, dim))).astype(np.float32)


def write_embeddings(catalog, ids: np.ndarray, vectors: np.ndarray) -> None:
    dim = vectors.shape[1]
    name = embeddings_table(MODEL)
    catalog.ensure_table(name, schemas.embeddings_schema(dim, None))
    values = pa.array(vectors.astype(np.float16).ravel(), pa.float16())
    catalog.append(
        name,
        pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "image_embedding": pa.FixedSizeListArray.from_arrays(values, dim),
            }
        ),
    )


def stored(vectors: np.ndarray) -> np.ndarray:
    return unit(vectors.astype(np.float16).astype(np.float32))


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int, allowed=None) -> np.ndarray:
    scores = vectors @ query
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    return np.argsort(-scores, kind="stable")[:k]


@pytest.fixture
def vector_catalog(catalog):
    """2,000 clustered vectors under shuffled ids, with 5 planted near-copies, and pairs rows."""
    from coyo_db.synth.metadata import synth_table

    rng = np.random.default_rng(0)
    vectors = clustered(rng, 2000)
    copies = unit(vectors[:5] + 0.02 * rng.standard_normal((5, DIM))).astype(np.float32)
    vectors = np.concatenate([vectors, copies])
    ids = rng.permutation(len(vectors)).astype(np.int64) * 5 + 11
    write_embeddings(catalog, ids, vectors)
    pairs = synth_table(len(ids), seed=1).set_column(0, "id", pa.array(ids))
    catalog.ensure_table("pairs", schemas.PAIRS)
    catalog.append("pairs", pairs.cast(schemas.PAIRS))
    return catalog, ids, stored(vectors), pairs


def test_kind_by_size_and_pq_shape():
    assert choose_kind(10_000, 512) == "flat"
    assert choose_kind(1_000_000, 512) == "ivf-flat"
    assert choose_kind(50_000_000, 512) == "ivf-pq"
    assert pq_subquantizers(512) == 64 and pq_subquantizers(1280) == 160
    assert pq_subquantizers(42) == 3  # 42 // 8 = 5 does not divide 42; 3 does


def test_flat_search_by_id_finds_the_near_copy_first_with_exact_scores(vector_catalog):
    catalog, ids, vectors, pairs = vector_catalog
    meta = build_index(catalog, MODEL)
    assert meta.kind == "flat" and meta.count == len(ids)
    loaded = load_index(catalog)
    assert np.array_equal(loaded.ids, np.sort(ids))
    for original in range(5):
        copy = 2000 + original
        result = search(catalog, id=int(ids[copy]), k=5)
        assert result.ids[0] == ids[original]
        assert int(ids[copy]) not in result.ids  # the query id is not its own neighbour
        want = exact_top(vectors, vectors[copy], 6)[1:]
        assert result.ids == ids[want].tolist()
        np.testing.assert_allclose(
            result.table["score"].to_numpy(), vectors[want] @ vectors[copy], atol=1e-3
        )
    # metadata comes from pairs
    row = pairs.to_pylist()[int(np.flatnonzero(pairs["id"].to_numpy() == result.ids[0])[0])]
    assert result.table["url"][0].as_py() == row["url"]
    assert result.table["text"][0].as_py() == row["text"]
    assert result.table.column_names[:3] == ["rank", "id", "score"]


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq"])
def test_ivf_kinds_reach_high_recall_against_exact_search(vector_catalog, kind):
    catalog, ids, vectors, _ = vector_catalog
    meta = build_index(catalog, MODEL, kind=kind, nlist=32, nprobe=12)
    assert meta.kind == kind and meta.params["nlist"] == 32
    if kind == "ivf-pq":
        assert meta.params["pq_m"] == 4 and meta.params["rerank"] == 16
    rng = np.random.default_rng(5)
    order = np.argsort(ids)
    recall = []
    for q in rng.choice(len(ids), 30, replace=False):
        result = search(catalog, id=int(ids[q]), k=10)
        want = set(ids[exact_top(vectors, vectors[q], 11)[1:]].tolist())
        recall.append(len(want & set(result.ids)) / 10)
        assert result.table["score"].to_numpy()[0] <= 1.001
    assert np.mean(recall) >= (0.9 if kind == "ivf-flat" else 0.8), np.mean(recall)
    # a full probe of an IVF-flat index is exact
    if kind == "ivf-flat":
        q = int(order[0])
        full = search(catalog, id=int(ids[q]), k=10, nprobe=32)
        assert full.ids == ids[exact_top(vectors, vectors[q], 11)[1:]].tolist()


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq"])
def test_partitioned_ivf_build_matches_the_default_build(vector_catalog, kind, monkeypatch):
    from coyo_db.search import vector_index

    catalog, ids, vectors, _ = vector_catalog
    trained_on = []
    original = vector_index.training_positions

    def spy(n, sample):
        positions = original(n, sample)
        trained_on.append(len(positions))
        return positions

    monkeypatch.setattr(vector_index, "training_positions", spy)
    queries = [int(ids[q]) for q in (2000, 2001, 2002, 2003, 2004, 17, 900)]

    def results(batch_size):
        meta = build_index(catalog, MODEL, kind=kind, nlist=16, nprobe=16, batch_size=batch_size)
        assert meta.count == len(ids)
        return [search(catalog, id=q, k=10) for q in queries]

    default, tiny = results(65_536), results(7)
    assert trained_on == [16 * 64, 16 * 64] and len(ids) > 16 * 64  # a sample, not the table
    loaded = load_index(catalog)
    assert np.array_equal(loaded.ids, np.sort(ids))
    where = {int(i): at for at, i in enumerate(ids)}
    assert np.array_equal(loaded.rows, [where[int(i)] for i in loaded.ids])  # row of each id
    for original_row, (a, b) in enumerate(zip(default, tiny, strict=True)):
        assert a.ids == b.ids
        if original_row < 5:  # the near-copy is found first by both builds
            assert b.ids[0] == ids[original_row]
        # every id returned carries its own vector's score: index ids map back to ids
        q = where[queries[original_row]]
        got = [where[i] for i in b.ids]
        np.testing.assert_allclose(
            b.table["score"].to_numpy(),
            vectors[got] @ vectors[q],
            atol=2e-3 if kind == "ivf-flat" else 0.05,
        )
        if kind == "ivf-flat":  # every list probed: exact
            assert b.ids == ids[exact_top(vectors, vectors[q], 11)[1:]].tolist()


@pytest.mark.parametrize("kind", ["flat", "ivf-flat"])
def test_an_id_ingested_twice_is_indexed_once_with_its_first_vector(vector_catalog, kind):
    catalog, ids, vectors, _ = vector_catalog
    dim = vectors.shape[1]
    # a second fragment: ids[0] again with the opposite vector, and an id without a vector
    values = pa.array(np.concatenate([-vectors[0], np.zeros(dim)]).astype(np.float16), pa.float16())
    embedding = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array([False, True]))
    catalog.append(
        embeddings_table(MODEL),
        pa.table({"id": pa.array([ids[0], 1], pa.int64()), "image_embedding": embedding}),
    )
    meta = build_index(catalog, MODEL, kind=kind, nlist=16, nprobe=16, batch_size=100)
    assert meta.count == len(ids)
    loaded = load_index(catalog)
    assert np.array_equal(loaded.ids, np.sort(ids)) and 1 not in loaded.ids
    assert loaded.rows[np.searchsorted(loaded.ids, ids[0])] == 0  # its first row
    result = search(catalog, id=int(ids[2000]), k=10)
    assert result.ids[0] == ids[0] and len(set(result.ids)) == 10
    assert result.table["score"][0].as_py() > 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf-flat"])
def test_where_filter_is_applied_inside_the_search(vector_catalog, kind):
    catalog, ids, vectors, _pairs = vector_catalog
    build_index(catalog, MODEL, kind=kind, nlist=32, nprobe=4)
    where = "width > 900 AND id % 3 = 0"
    chosen = set(catalog.sql(f"SELECT id FROM pairs WHERE {where}")["id"].to_pylist())
    assert 0 < len(chosen) < len(ids) // 5  # a narrow filter
    allowed = np.isin(ids, list(chosen))
    for q in (1, 7, 2001):
        result = search(catalog, id=int(ids[q]), k=10, where=where)
        assert len(result.ids) == 10 and set(result.ids) <= chosen
        assert result.candidates == len(chosen - {int(ids[q])})
        want = exact_top(vectors, vectors[q], 10, allowed & (ids != ids[q]))
        if kind == "flat":
            assert result.ids == ids[want].tolist()
        else:  # nprobe grows with the filter's selectivity: close to exact
            assert len(set(result.ids) & set(ids[want].tolist())) >= 8
    nothing = search(catalog, id=int(ids[0]), k=5, where="false")
    assert nothing.table.num_rows == 0


def test_user_mistakes_are_clear(vector_catalog, tmp_path):
    catalog, ids, _, _ = vector_catalog
    with pytest.raises(InputError, match="index build"):
        search(catalog, id=int(ids[0]))
    build_index(catalog, MODEL)
    with pytest.raises(InputError, match="exactly one"):
        search(catalog, id=int(ids[0]), text="a dog")
    with pytest.raises(InputError, match="no image vector for id"):
        search(catalog, id=-5)
    with pytest.raises(InputError, match="no such image file"):
        search(catalog, image=tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="unknown index kind"):
        build_index(catalog, MODEL, kind="hnsw")
    with pytest.raises(InputError, match="no embeddings table"):
        build_index(catalog, "open_clip:ViT-B-32:random")


def test_stale_index_is_reported(vector_catalog):
    catalog, ids, vectors, _ = vector_catalog
    build_index(catalog, MODEL)
    assert not search(catalog, id=int(ids[0]), k=3).stale
    write_embeddings(catalog, np.array([10**9]), vectors[:1])
    result = search(catalog, id=int(ids[0]), k=3)
    assert result.stale and result.table_version > result.index_version


def test_cli_builds_and_searches(vector_catalog):
    catalog, ids, _vectors, _ = vector_catalog
    runner = CliRunner()
    home = ["--home", str(catalog.home)]
    built = runner.invoke(app, ["index", "build", *home, "--model", MODEL])
    assert built.exit_code == 0 and "flat index of 2,005" in built.output
    copy = int(ids[2003])
    found = runner.invoke(app, ["search", *home, "--id", str(copy), "-k", "3", "-f", "csv"])
    assert found.exit_code == 0, found.output
    lines = found.output.strip().splitlines()
    assert lines[0].startswith('"rank","id","score","url","text"')
    assert lines[1].split(",")[1] == str(ids[3]) and len(lines) == 4
    ivf = ["--kind", "ivf-flat", "--nlist", "16", "--batch-size", "50"]
    built = runner.invoke(app, ["index", "build", *home, "--model", MODEL, *ivf])
    assert built.exit_code == 0 and "ivf-flat index of 2,005" in built.output, built.output
    found = runner.invoke(app, ["search", *home, "--id", str(copy), "-k", "3", "-f", "csv"])
    assert found.output.strip().splitlines()[1].split(",")[1] == str(ids[3])
    bad = runner.invoke(app, ["index", "build", *home, "--model", MODEL, "--batch-size", "0"])
    assert bad.exit_code != 0 and "--batch-size must be at least 1" in str(bad.exception)


def test_help_and_query_never_import_faiss_or_torch(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from coyo_db.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0 and 'export' in r.output and 'search' in r.output\n"
        f"home = {str(tmp_path / 'home')!r}\n"
        "r = CliRunner().invoke(app, ['init', '--home', home])\n"
        "r = CliRunner().invoke(app, ['query', '--home', home, 'SELECT 1'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('faiss', 'torch', 'open_clip') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the real model: an image's near-copy is found first -----------------------------------


@pytest.fixture(scope="module")
def image_home(tmp_path_factory):
    """12 synthetic images (with planted near-copies) ingested with effnet-lite0, indexed."""
    pytest.importorskip("torch")
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    root = tmp_path_factory.mktemp("search-images")
    catalog = Catalog(root / "home", create=True)
    ids = list(range(500, 512))
    shards, planted = write_image_shards(
        root / "images",
        ids,
        captions=[f"picture {i}" for i in ids],
        urls=[f"https://example.com/{i}.jpg" for i in ids],
        per_shard=12,
        seed=4,
    )
    ingest_images(catalog, shards, embed=[MODEL], workers=0)
    build_index(catalog, MODEL)
    from coyo_db.synth.metadata import synth_table

    pairs = synth_table(len(ids), seed=3).set_column(0, "id", pa.array(ids, pa.int64()))
    catalog.ensure_table("pairs", schemas.PAIRS)
    catalog.append("pairs", pairs.cast(schemas.PAIRS))
    return catalog, shards, planted


def test_search_by_image_and_by_id_finds_the_near_copy_first(image_home, tmp_path):
    import tarfile

    from PIL import Image

    catalog, shards, planted = image_home
    assert planted
    key_to_id = dict(
        zip(*catalog.sql("SELECT key, id FROM images").to_pydict().values(), strict=True)
    )
    family: dict[int, set[int]] = {}
    for copy in planted:
        original = key_to_id[copy.original_key]
        family.setdefault(original, {original}).add(key_to_id[copy.copy_key])
    for copy in planted:
        duplicate = key_to_id[copy.copy_key]
        by_id = search(catalog, id=duplicate, k=3)
        # its original (or another copy of the same original) comes first
        assert by_id.ids[0] in family[key_to_id[copy.original_key]] - {duplicate}, copy
    # a file the catalog never saw: a half-size re-encode of an original
    copy = planted[0]
    with tarfile.open(shards[0]) as tar:
        data = tar.extractfile(f"{copy.original_key}.jpg").read()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((image.width // 2, image.height // 2))
    path = tmp_path / "query.png"
    image.save(path)
    result = search(catalog, image=path, k=3)
    assert result.ids[0] in family[key_to_id[copy.original_key]]
    assert result.table["score"][0].as_py() > 0.8
    with pytest.raises(InputError, match="no text tower"):
        search(catalog, text="a picture")


def test_demo_step_exports_replays_and_finds_the_planted_copy(image_home, tmp_path):
    from coyo_db.synth.demo_export import run_export_demo

    catalog, _, _ = image_home
    lines: list[str] = []
    result = run_export_demo(catalog, tmp_path, seed=0, emit=lines.append)
    assert result.replay_same_ids and result.exported == result.selected
    assert result.webdataset_samples == 12
    assert result.search_found_original, lines
    assert any("the same" in line for line in lines)
    assert (tmp_path / "exports" / "subset" / "_manifest.json").is_file()


def test_text_search_uses_the_clip_text_tower(catalog):
    """A CLIP model (random weights, offline) embeds the text; hits equal exact search."""
    pytest.importorskip("open_clip")
    import torch

    from coyo_db.ingest.registry import load_model

    spec = "open_clip:ViT-B-32:random"
    torch.manual_seed(0)  # search loads the model again: the same seed gives the same weights
    model = load_model(spec)
    rng = np.random.default_rng(2)
    vectors = clustered(rng, 300, dim=model.dim)
    ids = np.arange(300, dtype=np.int64) + 7
    name = embeddings_table(spec)
    catalog.ensure_table(name, schemas.embeddings_schema(model.dim, None))
    values = pa.array(vectors.astype(np.float16).ravel(), pa.float16())
    catalog.append(
        name,
        pa.table(
            {"id": ids, "image_embedding": pa.FixedSizeListArray.from_arrays(values, model.dim)}
        ),
    )
    build_index(catalog, spec)
    torch.manual_seed(0)
    result = search(catalog, text="a photo of a dog", k=5, model=spec)
    query = unit(model.embed_texts(["a photo of a dog"]).detach().float().numpy()[0])
    want = exact_top(stored(vectors), query, 5)
    assert result.ids == ids[want].tolist()
    np.testing.assert_allclose(
        result.table["score"].to_numpy(), stored(vectors)[want] @ query, atol=1e-3
    )


def test_stored_vector_by_row_equals_the_scan(tmp_path):
    """A query by id takes its vector by row through the index (no scan of the table); the
    vector is the one a scan finds, and an id the index lacks falls back to the scan."""
    import numpy as np
    import pyarrow as pa

    from coyo_db.catalog import Catalog, schemas
    from coyo_db.catalog.tables import embeddings_name
    from coyo_db.search.nearest import stored_vector
    from coyo_db.search.vector_index import build_index, load_index

    catalog = Catalog(tmp_path / "home", create=True)
    name = embeddings_name("row-test")
    catalog.ensure_table(name, schemas.embeddings_schema(8, None))
    rng = np.random.default_rng(0)

    def add(ids: np.ndarray) -> np.ndarray:
        vectors = rng.standard_normal((len(ids), 8)).astype(np.float16)
        flat = pa.array(vectors.ravel(), pa.float16())
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "image_embedding": pa.FixedSizeListArray.from_arrays(flat, 8),
            }
        )
        catalog.append(name, table)
        return vectors.astype(np.float32)

    first = add(np.arange(100, 0, -1))  # ids in descending row order
    build_index(catalog, "row-test", kind="flat")
    loaded = load_index(catalog, "row-test")
    for id_, row in ((100, 0), (1, 99), (42, 58)):
        by_row = stored_vector(catalog, name, id_, loaded)
        np.testing.assert_array_equal(by_row, first[row][None])
        np.testing.assert_array_equal(by_row, stored_vector(catalog, name, id_))
    later = add(np.array([500]))  # not in the index: found by the scan
    np.testing.assert_array_equal(stored_vector(catalog, name, 500, loaded), later)
