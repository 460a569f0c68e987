"""`coyo-db label --engine ray`: the same `labels` rows as the local engine, on a local Ray.

One small Ray instance serves the module. The images come from three tiny shards: one member
of the first is broken after ingest (a decode failure) and the third shard is removed (a read
failure), so both engines quarantine the same images. Workers that die mid-job (a read task, a
labeling actor) are retried by Ray and each image is labeled once.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from ray_helpers import dying_read, dying_stage  # noqa: E402

from coyo_db.catalog import Catalog  # noqa: E402
from coyo_db.errors import InputError  # noqa: E402
from coyo_db.ingest import ray_engine  # noqa: E402
from coyo_db.ingest.images import ingest_images  # noqa: E402
from coyo_db.labels.labeling import label_images  # noqa: E402
from coyo_db.labels.taxonomy import IMAGENET1K  # noqa: E402
from coyo_db.synth.images import write_image_shards  # noqa: E402

IDS = list(range(900, 909))
OPTIONS = {"model": "effnet-lite0", "taxonomy": IMAGENET1K, "top_k": 5, "batch_size": 2}
LABELED, QUARANTINED = 5, 4  # 9 images: one undecodable, three in a removed shard


@pytest.fixture(scope="module")
def images_home(tmp_path_factory) -> Path:
    """A catalog home whose `images` hold 9 images, 4 of which cannot be labeled any more."""
    from imagedata import corrupt_jpeg

    root = tmp_path_factory.mktemp("images")
    shards, _ = write_image_shards(root / "shards", IDS, per_shard=3, seed=5)
    ingest_images(Catalog(root / "home", create=True), shards, workers=0)
    _break_member(shards[0], 1, corrupt_jpeg())
    shards[2].unlink()
    return root / "home"


def _break_member(shard: Path, index: int, payload: bytes) -> None:
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    images = [m for m, _ in members if m.name.endswith(".jpg")]
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member is images[index]:
                data = payload
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def _copy(images_home: Path, to: Path) -> Catalog:
    shutil.copytree(images_home, to)
    return Catalog(to)


@pytest.fixture(scope="module")
def local(tmp_path_factory, images_home) -> Catalog:
    catalog = _copy(images_home, tmp_path_factory.mktemp("local") / "home")
    summary = label_images(catalog, workers=0, **OPTIONS)
    assert (summary.rows_written, summary.rows_quarantined) == (LABELED, QUARANTINED)
    return catalog


def _snapshot(catalog: Catalog) -> dict[str, pa.Table]:
    return {
        "labels": catalog.sql("SELECT * FROM labels ORDER BY id"),
        "quarantine": catalog.sql(
            "SELECT table_name, input, fingerprint, row_index, id, reason, record "
            "FROM quarantine WHERE table_name = 'labels' ORDER BY input, row_index"
        ),
        "ledger": catalog.sql(
            "SELECT table_name, input, fingerprint, rows_read, rows_written, rows_quarantined "
            "FROM ledger WHERE table_name = 'labels' ORDER BY fingerprint"
        ),
    }


def _assert_same(ray_catalog: Catalog, local_catalog: Catalog) -> None:
    got, want = _snapshot(ray_catalog), _snapshot(local_catalog)
    for name in ("quarantine", "ledger"):
        assert got[name].equals(want[name]), name
    a, b = got["labels"], want["labels"]
    assert a.num_rows == LABELED
    for column in ("id", "taxonomy", "model", "labels"):
        assert a[column].equals(b[column]), column
    probs_a = np.array(a["label_probs"].to_pylist())
    probs_b = np.array(b["label_probs"].to_pylist())
    # Same pixels, same model; another batch split may move a float by a rounding step.
    assert np.abs(probs_a - probs_b).max() <= 1e-5


def test_ray_engine_writes_the_same_labels_as_the_local_engine(
    tmp_path, ray_cluster, images_home, local
):
    catalog = _copy(images_home, tmp_path / "home")
    summary = label_images(catalog, engine="ray", **OPTIONS)
    assert (summary.inputs_seen, summary.inputs_done) == (3, 3)
    assert (summary.rows_read, summary.rows_written) == (len(IDS), LABELED)
    assert summary.rows_quarantined == QUARANTINED
    _assert_same(catalog, local)
    run = catalog.sql("SELECT arguments FROM runs WHERE command = 'label'")
    assert '"engine": "ray"' in run["arguments"][0].as_py()

    again = label_images(catalog, engine="ray", **OPTIONS)
    assert (again.inputs_skipped, again.rows_read) == (3, 0)


def test_workers_killed_mid_job_are_retried_and_each_image_is_labeled_once(
    tmp_path, monkeypatch, ray_cluster, images_home, local
):
    read_marker, actor_marker = tmp_path / "read-died", tmp_path / "actor-died"
    monkeypatch.setattr(
        ray_engine, "read_unit", dying_read(ray_engine.read_unit, read_marker, "00000.tar")
    )
    monkeypatch.setattr(ray_engine, "StageActor", dying_stage(ray_engine.StageActor, actor_marker))
    catalog = _copy(images_home, tmp_path / "home")
    summary = label_images(catalog, engine="ray", **OPTIONS)
    assert read_marker.exists() and actor_marker.exists(), "both workers must have died once"
    assert (summary.rows_read, summary.rows_written) == (len(IDS), LABELED)
    query = "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM labels"
    counts = catalog.sql(query).to_pylist()[0]
    assert counts == {"n": LABELED, "ids": LABELED}
    _assert_same(catalog, local)


def test_engine_options_are_checked(tmp_path, images_home):
    catalog = _copy(images_home, tmp_path / "home")
    with pytest.raises(InputError, match="--engine"):
        label_images(catalog, engine="spark", **OPTIONS)
    with pytest.raises(InputError, match="--address"):
        label_images(catalog, address="auto", **OPTIONS)


def test_label_command_with_the_ray_engine(tmp_path, ray_cluster, images_home):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(_copy(images_home, tmp_path / "home").home)
    args = ["label", "-m", "effnet-lite0", "-t", IMAGENET1K, "-k", "3", "--home", home]
    result = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 0, result.output
    assert "9 images read = 5 labeled + 4 quarantined" in result.output
    result = CliRunner().invoke(app, [*args, "--engine", "dask"])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)
