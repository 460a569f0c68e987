"""`coyo-db refset add --engine ray`: the same reference-set rows as the local engine, on a
local Ray.

The reference folder holds two sub-folders (two shards): real photos, a blank image (flagged
low-information) and an undecodable file (counted as failed), so both engines must agree on
ref_ids across shards, on pHash, flags and failures, and on the descriptors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")


from coyo_db.audit.refset_job import add_refset  # noqa: E402
from coyo_db.catalog import Catalog, tables  # noqa: E402
from coyo_db.errors import InputError  # noqa: E402
from tests.audit_helpers import write_references  # noqa: E402

IMAGES, FAILED, LOW_INFO = 7, 1, 1  # 5 in a/ (one blank), 2 + 1 broken in b/


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refs")
    photos = write_references(root / "a")
    (root / "b").mkdir()
    photos["coffee"].rotate(90).save(root / "b" / "coffee-turned.jpg", quality=90)
    photos["rocket"].resize((120, 160)).save(root / "b" / "rocket-small.png")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture(scope="module")
def local(tmp_path_factory, refs) -> Catalog:
    catalog = Catalog(tmp_path_factory.mktemp("local") / "home", create=True)
    summary = add_refset(catalog, "mini", refs, workers=0, batch_size=4)
    assert (summary.images, summary.failed, summary.low_info) == (IMAGES, FAILED, LOW_INFO)
    return catalog


def _tables(catalog: Catalog) -> dict[str, pa.Table]:
    desc = (
        catalog.dataset(tables.refset_descriptors_name("effnet-lite0")).to_table().sort_by("ref_id")
    )
    return {
        "images": catalog.dataset(tables.REFSET_IMAGES.name).to_table().sort_by("ref_id"),
        "refsets": catalog.dataset(tables.REFSETS.name).to_table().drop_columns(["created_at"]),
        "desc": desc,
    }


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    values = array.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(array), array.type.list_size)


def test_ray_engine_writes_the_same_refset_as_the_local_engine(tmp_path, ray_cluster, refs, local):
    catalog = Catalog(tmp_path / "home", create=True)
    summary = add_refset(catalog, "mini", refs, engine="ray", batch_size=3)
    assert (summary.images, summary.failed, summary.low_info) == (IMAGES, FAILED, LOW_INFO)
    got, want = _tables(catalog), _tables(local)
    assert got["images"].equals(want["images"])
    assert got["images"]["ref_id"].to_pylist() == list(range(IMAGES))
    assert len(set(got["images"]["shard"].to_pylist())) == 2, "two shards, ref_ids across both"
    assert got["refsets"].equals(want["refsets"])
    a, b = got["desc"], want["desc"]
    assert a.select(["refset", "ref_id"]).equals(b.select(["refset", "ref_id"]))
    # Same pixels, same model; another batch split may move a value by a float16 step.
    np.testing.assert_allclose(_vectors(a["descriptor"]), _vectors(b["descriptor"]), atol=2e-3)
    assert a["descriptor_flip"].null_count == len(a) == b["descriptor_flip"].null_count


def test_engine_options_are_checked(tmp_path, refs):
    catalog = Catalog(tmp_path / "home", create=True)
    with pytest.raises(InputError, match="--engine"):
        add_refset(catalog, "mini", refs, engine="spark")
    with pytest.raises(InputError, match="--address"):
        add_refset(catalog, "mini", refs, address="auto")


def test_refset_add_command_with_the_ray_engine(tmp_path, ray_cluster, refs):
    from typer.testing import CliRunner

    from coyo_db.cli.app import app

    home = str(Catalog.init(tmp_path / "home").home)
    args = ["refset", "add", "mini", str(refs), "--home", home]
    result = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 0, result.output
    assert f"{IMAGES} images, {LOW_INFO} low-information, {FAILED} unreadable" in result.output
    result = CliRunner().invoke(app, [*args, "--replace", "--engine", "dask"])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)


def test_ray_engine_audits_to_the_same_rows_as_the_local_engine(tmp_path, ray_cluster, refs, local):
    import shutil

    from PIL import Image

    from coyo_db.audit.contamination import audit
    from tests.audit_helpers import write_dataset

    photos = {p.stem: Image.open(p).convert("RGB") for p in (refs / "a").glob("*.jpg")}
    write_dataset(tmp_path / "data", photos)
    rows = {}
    for engine in ("local", "ray"):
        home = tmp_path / engine
        shutil.copytree(local.home, home)
        catalog = Catalog(home)
        summary = audit(catalog, ["mini"], paths=[tmp_path / "data"], engine=engine, workers=0)
        assert summary.hits > 0
        rows[engine] = catalog.sql(
            "SELECT id, ref_id, method, hit FROM contamination_candidates ORDER BY id, ref_id"
        ).to_pylist()
    assert rows["ray"] == rows["local"]
