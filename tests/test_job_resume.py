"""`refset add` and `audit` killed mid-job and run again: each row once, earlier results intact.

(`ingest images` and `label` have their own kill tests in their test files; the runner's in
test_image_job.py.) Both jobs write once at the end, so a kill leaves the catalog as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coyo_db.audit.contamination import audit
from coyo_db.audit.refset_job import DescribeStage, add_refset
from coyo_db.catalog import Catalog
from tests.audit_helpers import write_dataset, write_references


def _dying(cls: type, monkeypatch: pytest.MonkeyPatch, on_call: int) -> None:
    real = cls.__call__
    calls = []

    def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == on_call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    photos = write_references(root / "refs" / "a")
    (root / "refs" / "b").mkdir()
    photos["rocket"].resize((120, 160)).save(root / "refs" / "b" / "rocket-small.png")
    write_dataset(root / "data", photos)
    return root / "refs", root / "data"


def _refset_rows(catalog: Catalog) -> list[tuple]:
    rows = catalog.sql(
        "SELECT refset, ref_id, ref_path FROM refset_images ORDER BY refset, ref_id"
    ).to_pylist()
    return [tuple(r.values()) for r in rows]


def test_refset_add_killed_and_run_again(tmp_path, folders, monkeypatch):
    refs, _ = folders
    clean = Catalog(tmp_path / "clean", create=True)
    add_refset(clean, "mini", refs, workers=0, batch_size=2)

    catalog = Catalog(tmp_path / "home", create=True)
    with monkeypatch.context() as patch:
        _dying(DescribeStage, patch, on_call=2)  # after the first batch of two
        with pytest.raises(KeyboardInterrupt):
            add_refset(catalog, "mini", refs, workers=0, batch_size=2)
    assert not catalog.has_table("refset_images") or _refset_rows(catalog) == []
    statuses = catalog.sql("SELECT status FROM runs")["status"].to_pylist()
    assert statuses == ["interrupted"]

    add_refset(catalog, "mini", refs, workers=0, batch_size=2)  # no --replace needed
    assert _refset_rows(catalog) == _refset_rows(clean)
    assert catalog.sql("SELECT count(*) AS n FROM refsets")["n"][0].as_py() == 1


def test_audit_killed_and_run_again(tmp_path, folders, monkeypatch):
    refs, data = folders
    home = tmp_path / "home"
    catalog = Catalog(home, create=True)
    add_refset(catalog, "mini", refs, workers=0)
    from coyo_db.ingest.images import ingest_images

    ingest_images(catalog, [data], workers=0)
    audit(catalog, ["mini"], workers=0, batch_size=2)
    query = "SELECT id, ref_id, method FROM contamination ORDER BY id, ref_id"
    before = catalog.sql(query).to_pylist()
    assert before, "the setup plants copies"

    # another audit (a wider pHash candidate radius: more candidates, the same hits), killed
    # in its second batch: from the descriptors the first stored, nothing is described again
    from coyo_db.audit import contamination
    from coyo_db.audit.decision import OperatingPoint

    wider = OperatingPoint(candidate_radius=14)
    real, calls = contamination.match_batch, []

    def dying(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        _dying(DescribeStage, patch, on_call=1)  # describing anything fails the test
        patch.setattr(contamination, "match_batch", dying)
        with pytest.raises(KeyboardInterrupt):
            audit(catalog, ["mini"], workers=0, batch_size=2, point=wider)
    assert catalog.sql(query).to_pylist() == before, "a killed audit leaves the last results"

    audit(catalog, ["mini"], workers=0, batch_size=2, point=wider)
    assert catalog.sql(query).to_pylist() == before
    runs = catalog.sql("SELECT status FROM runs WHERE command = 'audit' ORDER BY started_at")
    assert runs["status"].to_pylist() == ["ok", "interrupted", "ok"]
    shutil.rmtree(home)
