"""A catalog home on S3 (``s3://bucket/prefix``), against moto's S3 server on loopback.

The tables live on the object store (endpoint and credentials from the AWS environment
variables), the DuckDB file in a local cache folder; init, ingest (metadata and images), query
and tables work as with a local home, and a rerun skips what the ledger on S3 records.
"""

from __future__ import annotations

import socket

import pytest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from coyo_db.catalog import Catalog  # noqa: E402
from coyo_db.errors import CatalogError  # noqa: E402
from coyo_db.ingest.metadata import ingest_metadata  # noqa: E402

BUCKET = "coyo-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("COYO_DB_CACHE", str(tmp_path / "cache"))
    return s3_endpoint


def _home(tmp_path) -> str:
    return f"s3://{BUCKET}/{tmp_path.name}/home"


def test_metadata_ingest_and_query_on_an_s3_home(tmp_path, s3_env, coyo_parquet, coyo_rows):
    home = _home(tmp_path)
    catalog = Catalog(home, create=True)
    assert catalog.remote and catalog.location == home
    assert catalog.home.is_relative_to(tmp_path / "cache"), "DuckDB lives in the local cache"
    summary = ingest_metadata(catalog, [coyo_parquet])
    assert summary.rows_written == len(coyo_rows)

    again = Catalog(home, create=False)
    assert {"pairs", "ledger", "runs"} <= set(again.table_names())
    assert str(again.table_uri("pairs")) == f"{home}/tables/pairs.lance"
    got = again.sql("SELECT id, url FROM pairs ORDER BY id").to_pylist()
    assert got == sorted(
        ({"id": r["id"], "url": r["url"]} for r in coyo_rows), key=lambda r: r["id"]
    )
    # Nothing of the tables was written locally.
    assert not list(tmp_path.rglob("*.lance"))

    rerun = ingest_metadata(again, [coyo_parquet])
    assert rerun.inputs_skipped == 1 and rerun.rows_written == 0
    assert again.sql("SELECT count(*) AS n FROM pairs")["n"][0].as_py() == len(coyo_rows)


def test_cli_init_query_and_tables_with_an_s3_home(tmp_path, s3_env, coyo_parquet, coyo_rows):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = _home(tmp_path)
    runner = CliRunner()
    for args in (["init"], ["ingest", "metadata", str(coyo_parquet)]):
        result = runner.invoke(app, [*args, "--home", home])
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["query", "SELECT count(*) AS n FROM pairs", "--format", "csv", "--home", home]
    )
    assert result.exit_code == 0, result.output
    assert result.output.split() == ['"n"', str(len(coyo_rows))]
    result = runner.invoke(app, ["tables", "--home", home])
    assert result.exit_code == 0 and "pairs" in result.output


def test_a_missing_s3_catalog_is_a_catalog_error(tmp_path, s3_env):
    with pytest.raises(CatalogError, match="no catalog at s3://"):
        Catalog(f"s3://{BUCKET}/{tmp_path.name}/nothing", create=False)


def test_image_ingest_on_an_s3_home(tmp_path, s3_env):
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import write_image_shards

    shards, _ = write_image_shards(tmp_path / "shards", [11, 12, 13, 14], per_shard=2, seed=1)
    catalog = Catalog(_home(tmp_path), create=True)
    summary = ingest_images(catalog, shards, scores=["profanity"], workers=0)
    assert summary.rows_written == 4
    rows = catalog.sql("SELECT id, phash FROM images ORDER BY id").to_pylist()
    assert [r["id"] for r in rows] == [11, 12, 13, 14] and all(r["phash"] for r in rows)
    again = ingest_images(catalog, shards, scores=["profanity"], workers=0)
    assert again.inputs_skipped == len(shards)


def test_storage_options_and_home_uris_come_from_the_environment(monkeypatch):
    from pathlib import Path

    from coyo_db.catalog import resolve_home
    from coyo_db.catalog.object_store import storage_options

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage_options("s3://b/p/tables/x.lance") == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "allow_http": "true",
        "aws_access_key_id": "key",
        "aws_secret_access_key": "secret",
        "aws_region": "eu-west-1",
    }
    assert storage_options("/local/tables/x.lance") is None
    # A --home typed as a Path arrives with one slash; it is still the URI.
    assert resolve_home(Path("s3://bucket/prefix/")) == "s3://bucket/prefix"
    assert isinstance(resolve_home("relative-home"), Path)


def test_writers_on_an_s3_home_take_turns_on_a_lease(tmp_path, s3_env, coyo_parquet, monkeypatch):
    from coyo_db.catalog import remote_lease, writer_lock
    from coyo_db.catalog.writer_lock import CatalogBusyError

    catalog = Catalog(_home(tmp_path), create=True)
    where = writer_lock.place(catalog)
    assert where == catalog.location  # the lease, not the local cache folder
    uri = f"{catalog.location}/{remote_lease.LEASE_TABLE}"

    first = remote_lease.Lease(uri, "ingest images")
    assert first.try_take() is None
    second = remote_lease.Lease(uri, "dedup phash")
    assert second.try_take()["command"] == "ingest images"
    with pytest.raises(CatalogBusyError, match="ingest images"):
        writer_lock.acquire(where, "ingest metadata", timeout=0)
    first.release()
    assert second.try_take() is None
    second.release()

    # a holder that dies stops renewing: its lease runs out and the next writer takes it
    monkeypatch.setattr(remote_lease, "TTL_SECONDS", 1.0)
    dead = remote_lease.Lease(uri, "label")
    assert dead.try_take() is None
    dead._stop.set()  # as if killed: no renewal, no release
    assert remote_lease.Lease(uri, "refset add").try_take()["command"] == "label"
    import time

    time.sleep(1.2)
    with writer_lock.writing(where, "ingest metadata", timeout=5):
        pass
    summary = ingest_metadata(catalog, [coyo_parquet])  # takes and frees the lease itself
    assert summary.inputs_done == 1
    assert remote_lease.Lease(uri, "audit").try_take() is None


def test_two_lease_takers_at_once_get_one_winner(tmp_path, s3_env):
    import threading

    from coyo_db.catalog import remote_lease

    catalog = Catalog(_home(tmp_path), create=True)
    uri = f"{catalog.location}/{remote_lease.LEASE_TABLE}"
    remote_lease.Lease(uri, "warm-up").release()  # the lease table exists
    leases = [remote_lease.Lease(uri, f"writer {i}") for i in range(4)]
    results: dict[int, object] = {}
    start = threading.Barrier(len(leases))

    def take(i: int) -> None:
        start.wait()
        results[i] = leases[i].try_take()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, result in results.items() if result is None]
    assert len(winners) == 1, results
    leases[winners[0]].release()
