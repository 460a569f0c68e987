"""`coyo-db ingest images`: the pipeline end to end on shards the tests build.

pHash equality with imagehash, ids from img2dataset's json / the url / the key, embeddings and
scores per shard, quarantine of broken records, kill-and-resume, and adding outputs later.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from coyo_db.catalog import Catalog
from coyo_db.ingest.images import ingest_images
from coyo_db.synth.images import write_image_shards

IDS = list(range(5_000, 5_024))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("shards")
    paths, _ = write_image_shards(out, IDS, per_shard=12, seed=3)
    return paths


def _images_in(paths: list[Path]) -> dict[int, bytes]:
    found = {}
    for path in paths:
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, payload in members.items():
            if name.endswith(".json"):
                meta = json.loads(payload)
                found[meta["id"]] = members[name.replace(".json", ".jpg")]
    return found


def test_images_table_holds_exact_phash_sizes_and_locations(tmp_path, shards):
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(catalog, shards, workers=0)
    assert summary.rows_read == summary.rows_written == len(IDS)
    rows = catalog.sql("SELECT * FROM images ORDER BY id").to_pylist()
    assert [r["id"] for r in rows] == IDS
    assert {r["id_origin"] for r in rows} == {"json"}
    originals = _images_in(shards)
    for row in rows:
        image = Image.open(io.BytesIO(originals[row["id"]]))
        assert row["image_phash"] == str(imagehash.phash(image))
        assert row["phash"] == int(row["image_phash"], 16)
        assert (row["width"], row["height"], row["format"]) == (*image.size, "JPEG")
        assert row["bytes"] == len(originals[row["id"]])
        assert row["member"].endswith(".jpg") and row["shard"] in {str(s) for s in shards}


def test_embeddings_and_scores_per_shard(tmp_path, shards):
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(
        catalog,
        shards,
        embed=["effnet-lite0", "minilm"],
        scores=["faces", "language", "profanity"],
        workers=2,
        batch_size=8,
    )
    assert summary.tables["embeddings__effnet_lite0"] == len(IDS)
    assert summary.tables["embeddings__minilm"] == len(IDS)
    effnet = catalog.dataset("embeddings__effnet_lite0").to_table()
    assert effnet.schema.field("image_embedding").type == pa.list_(pa.float16(), 1280)
    vectors = np.stack(effnet["image_embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)
    minilm = catalog.dataset("embeddings__minilm").to_table()
    assert minilm.schema.field("text_embedding").type == pa.list_(pa.float16(), 384)

    wide = catalog.sql("SELECT * FROM image_scores ORDER BY id")
    assert wide.num_rows == len(IDS)
    assert set(wide["language"].to_pylist()) == {"en"}
    assert wide["profanity"].to_pylist() == [False] * len(IDS)
    assert all(n is not None and n >= 0 for n in wide["num_faces_opencv"].to_pylist())
    # The views see the float16 vectors as float32.
    dims = catalog.sql("SELECT DISTINCT len(image_embedding) AS d FROM embeddings__effnet_lite0")
    assert dims["d"].to_pylist() == [1280]


def test_a_second_run_adds_only_the_new_outputs(tmp_path, shards):
    catalog = Catalog(tmp_path / "home", create=True)
    ingest_images(catalog, shards, workers=0)
    version = catalog.dataset("images").version
    again = ingest_images(catalog, shards, workers=0)
    assert again.inputs_skipped == len(shards) and again.rows_read == 0
    more = ingest_images(catalog, shards, scores=["language"], workers=0)
    assert more.inputs_done == len(shards)
    assert catalog.dataset("images").version == version, "images must not be written again"
    assert catalog.sql("SELECT count(*) AS n FROM scores")["n"][0].as_py() == 2 * len(IDS)
    ids = catalog.sql("SELECT DISTINCT id FROM scores ORDER BY id")["id"].to_pylist()
    assert ids == IDS


def test_ids_come_from_the_url_in_pairs_when_the_json_has_none(tmp_path, coyo_rows):
    from conftest import coyo_table

    catalog = Catalog(tmp_path / "home", create=True)
    catalog.append("pairs", coyo_table(coyo_rows))
    urls = [row["url"] for row in coyo_rows[:3]]
    paths, _ = write_image_shards(tmp_path / "s", [1, 2, 3], urls=urls, seed=5)
    _drop_json_ids(paths[0])
    ingest_images(catalog, paths, workers=0)
    got = catalog.sql("SELECT url, id, id_origin FROM images ORDER BY url").to_pylist()
    expected = sorted((row["url"], row["id"]) for row in coyo_rows[:3])
    assert [(r["url"], r["id"]) for r in got] == expected
    assert {r["id_origin"] for r in got} == {"url"}


def _drop_json_ids(tar_path: Path) -> None:
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for member, payload in members:
            if member.name.endswith(".json"):
                meta = json.loads(payload)
                meta.pop("id")
                payload = json.dumps(meta).encode()
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))


def test_broken_records_are_quarantined_and_the_job_goes_on(tmp_path, shards):
    from imagedata import bomb_png, corrupt_jpeg, truncate_tar

    bad = tmp_path / "bad.tar"
    good = Image.new("RGB", (300, 200), (10, 200, 30))
    buffer = io.BytesIO()
    good.save(buffer, "JPEG")
    entries = {
        "000000001.jpg": buffer.getvalue(),
        "000000002.jpg": corrupt_jpeg(),
        "000000003.jpg": b"",
        "000000004.png": bomb_png(20_000, 12_000),
    }
    with tarfile.open(bad, "w") as tar:
        for name, payload in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    # A shard cut short in the middle of its third image.
    cut, _ = write_image_shards(tmp_path / "cut", [9_001, 9_002, 9_003, 9_004], seed=11)
    truncate_tar(cut[0], "000000002.jpg")
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(catalog, [*shards, bad, cut[0]], workers=0)
    assert summary.rows_read == len(IDS) + 4 + 3
    assert summary.rows_written == len(IDS) + 1 + 2
    assert summary.rows_quarantined == 4
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined
    reasons = catalog.sql(
        "SELECT reason FROM quarantine WHERE table_name = 'images' ORDER BY reason"
    )["reason"].to_pylist()
    assert len(reasons) == 4
    assert any("bomb" in r for r in reasons) and any("zero-byte" in r for r in reasons)
    assert any("truncated tar member" in r for r in reasons)


KILLER = textwrap.dedent(
    """
    import os, sys
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.catalog.ledger import Ledger

    real = Ledger.commit_input
    done = []

    def commit_then_die(self, transaction, record, run_id):
        version = real(self, transaction, record, run_id)
        if self.table_name == "images":
            done.append(record.input)
            if len(done) == 1:
                os._exit(9)
        return version

    Ledger.commit_input = commit_then_die
    ingest_images(Catalog(sys.argv[1], create=True), sys.argv[2:], scores=["language"], workers=0)
    """
)


def test_a_killed_ingest_resumes_with_each_row_once(tmp_path, shards):
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-c", KILLER, str(home), *map(str, shards)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 9, result.stderr
    catalog = Catalog(home)
    assert catalog.sql("SELECT count(*) AS n FROM images")["n"][0].as_py() == 12
    summary = ingest_images(catalog, shards, scores=["language"], workers=0)
    assert summary.inputs_skipped == 1 and summary.inputs_done == len(shards) - 1
    counts = catalog.sql(
        "SELECT (SELECT count(*) FROM images) AS images, "
        "(SELECT count(DISTINCT id) FROM images) AS ids, "
        "(SELECT count(*) FROM scores WHERE score = 'language') AS scores"
    ).to_pylist()[0]
    assert counts == {"images": len(IDS), "ids": len(IDS), "scores": len(IDS)}


def test_unknown_model_and_bad_batch_size_are_user_errors(tmp_path, shards):
    from coyo_db.errors import InputError

    catalog = Catalog(tmp_path / "home", create=True)
    with pytest.raises(InputError, match="unknown model"):
        ingest_images(catalog, shards, embed=["no-such-model"])
    with pytest.raises(InputError, match="batch"):
        ingest_images(catalog, shards, batch_size=0)


def test_missing_score_values_are_null_not_nan():
    from coyo_db.ingest.image_outputs import score_rows

    rows = score_rows(
        np.array([1, 2]),
        "language",
        {"language": np.array(["en", None], object), "language_prob": np.array([0.9, np.nan])},
    )
    probs = rows.filter(pa.compute.equal(rows["score"], "language_prob"))
    assert probs["value"].to_pylist()[1] is None
    labels = rows.filter(pa.compute.equal(rows["score"], "language"))
    assert labels["label"].to_pylist() == ["en", None]


def test_ingest_images_command(tmp_path, shards):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(Catalog.init(tmp_path / "home").home)
    args = ["ingest", "images", *map(str, shards), "--scores", "language,profanity"]
    result = CliRunner().invoke(app, [*args, "--workers", "0", "--home", home])
    assert result.exit_code == 0, result.output
    assert f"{len(IDS)} images read = {len(IDS)} written + 0 quarantined" in result.stdout
    assert "scores:" in result.stdout
    bad = CliRunner().invoke(app, ["ingest", "images", str(tmp_path / "nowhere"), "--home", home])
    assert bad.exit_code != 0


def test_fast_phash_mode_stays_close_to_exact(tmp_path, shards):
    exact = Catalog(tmp_path / "exact", create=True)
    fast = Catalog(tmp_path / "fast", create=True)
    ingest_images(exact, shards, workers=0)
    ingest_images(fast, shards, workers=0, phash="fast")
    a = exact.sql("SELECT id, phash FROM images ORDER BY id")["phash"].to_numpy()
    b = fast.sql("SELECT id, phash FROM images ORDER BY id")["phash"].to_numpy()
    distance = np.array([bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)])
    assert np.mean(distance <= 4) >= 0.9, distance
