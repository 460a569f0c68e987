"""`ingest images --engine ray`: the same rows as the local engine, on a local Ray cluster.

One small Ray instance serves the module. Workers that die mid-job (a read task, a model
actor) are retried by Ray and the shards still hold each row once; a driver killed after its
first commit, run again, finishes the rest through the ledgers, as the local engine does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from ray_helpers import dying_read, dying_stage  # noqa: E402

from coyo_db.catalog import Catalog  # noqa: E402
from coyo_db.errors import InputError  # noqa: E402
from coyo_db.ingest import ray_engine  # noqa: E402
from coyo_db.ingest.images import ingest_images  # noqa: E402
from coyo_db.synth.images import write_image_shards  # noqa: E402

IDS = list(range(7_000, 7_018))
OPTIONS = {"embed": ["effnet-lite0"], "scores": ["language"], "batch_size": 4}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    from imagedata import corrupt_jpeg, jpeg_bytes, write_tar

    out = tmp_path_factory.mktemp("shards")
    paths, _ = write_image_shards(out, IDS, per_shard=6, seed=7)
    good = jpeg_bytes(Image.new("RGB", (120, 90), (200, 40, 40)), quality=75)
    members = {"000000001.jpg": good, "000000002.jpg": corrupt_jpeg(), "000000003.jpg": b""}
    return [*paths, write_tar(out / "bad.tar", members)]


@pytest.fixture(scope="module")
def local(tmp_path_factory, shards) -> Catalog:
    catalog = Catalog(tmp_path_factory.mktemp("local") / "home", create=True)
    ingest_images(catalog, shards, workers=0, **OPTIONS)
    return catalog


def _snapshot(catalog: Catalog) -> dict[str, pa.Table]:
    return {
        "images": catalog.sql("SELECT * FROM images ORDER BY shard, member"),
        "scores": catalog.sql("SELECT * FROM scores ORDER BY id, score"),
        "quarantine": catalog.sql(
            "SELECT table_name, input, fingerprint, row_index, reason, record "
            "FROM quarantine ORDER BY input, row_index"
        ),
        "ledger": catalog.sql(
            "SELECT table_name, input, fingerprint, rows_read, rows_written, rows_quarantined "
            "FROM ledger ORDER BY table_name, fingerprint"
        ),
        "vectors": catalog.dataset("embeddings__effnet_lite0").to_table().sort_by("id"),
    }


def _assert_same(ray_catalog: Catalog, local_catalog: Catalog) -> None:
    got, want = _snapshot(ray_catalog), _snapshot(local_catalog)
    for name in ("images", "scores", "quarantine", "ledger"):
        assert got[name].equals(want[name]), name
    assert got["vectors"]["id"].equals(want["vectors"]["id"])
    a = np.stack(got["vectors"]["image_embedding"].to_numpy(zero_copy_only=False))
    b = np.stack(want["vectors"]["image_embedding"].to_numpy(zero_copy_only=False))
    # Same pixels, same model; a different batch split may move float16 by one step.
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() <= 2e-3


def _counts(catalog: Catalog) -> dict[str, int]:
    return catalog.sql(
        "SELECT (SELECT count(*) FROM images) AS images, "
        "(SELECT count(DISTINCT (shard, member)) FROM images) AS distinct_images, "
        "(SELECT count(*) FROM embeddings__effnet_lite0) AS vectors, "
        "(SELECT count(DISTINCT id) FROM embeddings__effnet_lite0) AS distinct_vectors, "
        "(SELECT count(*) FROM quarantine) AS quarantined"
    ).to_pylist()[0]


def test_ray_engine_writes_the_same_rows_as_the_local_engine(tmp_path, ray_cluster, shards, local):
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(catalog, shards, engine="ray", **OPTIONS)
    assert summary.rows_read == len(IDS) + 3
    assert summary.rows_written == len(IDS) + 1 and summary.rows_quarantined == 2
    assert summary.tables["embeddings__effnet_lite0"] == len(IDS) + 1
    _assert_same(catalog, local)
    run = catalog.sql("SELECT arguments FROM runs")["arguments"][0].as_py()
    assert '"engine": "ray"' in run

    again = ingest_images(catalog, shards, engine="ray", **OPTIONS)
    assert again.inputs_skipped == len(shards) and again.rows_read == 0


def test_workers_killed_mid_job_are_retried_and_each_row_lands_once(
    tmp_path, monkeypatch, ray_cluster, shards, local
):
    read_marker, actor_marker = tmp_path / "read-died", tmp_path / "actor-died"
    monkeypatch.setattr(
        ray_engine, "read_unit", dying_read(ray_engine.read_unit, read_marker, "00001.tar")
    )
    monkeypatch.setattr(ray_engine, "StageActor", dying_stage(ray_engine.StageActor, actor_marker))
    catalog = Catalog(tmp_path / "home", create=True)
    summary = ingest_images(catalog, shards, engine="ray", **OPTIONS)
    assert read_marker.exists() and actor_marker.exists(), "both workers must have died once"
    assert summary.rows_read == len(IDS) + 3
    counts = _counts(catalog)
    assert counts["images"] == counts["distinct_images"] == len(IDS) + 1
    assert counts["vectors"] == counts["distinct_vectors"] == len(IDS) + 1
    assert counts["quarantined"] == 2
    _assert_same(catalog, local)


KILLED_DRIVER = textwrap.dedent(
    """
    import os, sys
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images
    from coyo_db.catalog.ledger import Ledger

    real = Ledger.commit_input

    def commit_then_die(self, transaction, record, run_id):
        version = real(self, transaction, record, run_id)
        if self.table_name == "images":
            os._exit(9)
        return version

    Ledger.commit_input = commit_then_die
    ingest_images(
        Catalog(sys.argv[1], create=True), sys.argv[3:], engine="ray", address=sys.argv[2],
        embed=["effnet-lite0"], scores=["language"], batch_size=4,
    )
    """
)


def test_a_killed_driver_resumes_with_each_row_once(tmp_path, ray_cluster, shards, local):
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, str(home), ray_cluster, *map(str, shards)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
        timeout=120,
    )
    assert result.returncode == 9, result.stderr[-2000:]
    catalog = Catalog(home)
    first = catalog.sql("SELECT count(DISTINCT shard) AS n FROM images")["n"][0].as_py()
    assert first == 1, "the driver died after committing one shard"
    summary = ingest_images(catalog, shards, engine="ray", **OPTIONS)
    assert summary.inputs_skipped == 1 and summary.inputs_done == len(shards) - 1
    counts = _counts(catalog)
    assert counts["images"] == counts["distinct_images"] == len(IDS) + 1
    _assert_same(catalog, local)


def test_engine_options_are_checked(tmp_path, shards):
    catalog = Catalog(tmp_path / "home", create=True)
    with pytest.raises(InputError, match="--engine"):
        ingest_images(catalog, shards, engine="spark")
    with pytest.raises(InputError, match="--address"):
        ingest_images(catalog, shards, address="auto")


def test_ingest_images_command_with_the_ray_engine(tmp_path, ray_cluster, shards):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(Catalog.init(tmp_path / "home").home)
    args = ["ingest", "images", *map(str, shards[:1]), "--scores", "profanity"]
    result = CliRunner().invoke(app, [*args, "--engine", "ray", "--home", home])
    assert result.exit_code == 0, result.output
    assert "6 images read = 6 written" in result.output
    result = CliRunner().invoke(app, [*args, "--engine", "dask", "--home", home])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


def test_ray_engine_into_an_s3_home(tmp_path, monkeypatch, ray_cluster, shards, local):
    """The driver commits to the object store; the workers never touch it."""
    import socket

    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "COYO_DB_CACHE": str(tmp_path / "cache"),
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="coyo-ray"
        )
        catalog = Catalog("s3://coyo-ray/home", create=True)
        summary = ingest_images(catalog, shards, engine="ray", scores=["profanity"], batch_size=4)
        assert summary.rows_written == len(IDS) + 1
        got = catalog.sql("SELECT * FROM images ORDER BY shard, member")
        assert got.equals(local.sql("SELECT * FROM images ORDER BY shard, member"))
    finally:
        server.stop()
