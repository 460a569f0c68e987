"""Shared fixtures: a fresh catalog per test and the real COYO rows as Parquet."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coyo_db.catalog import Catalog, schemas

FIXTURES = Path(__file__).parent / "fixtures"


SCRIPTS = Path(__file__).parent.parent / "scripts"


def load_script(name: str):  # type: ignore[no-untyped-def]
    """Import scripts/<name>.py as `python scripts/<name>.py` runs it: with its folder on the
    path, so that it finds its sibling modules."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def load_jsonl(name: str) -> list[dict]:
    with (FIXTURES / name).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture
def coyo_rows() -> list[dict]:
    """The 11 published COYO-700M rows, all 17 columns."""
    return load_jsonl("coyo700m_rows.jsonl")


@pytest.fixture
def labeled_rows() -> list[dict]:
    """The 5 published COYO-Labeled-300M rows (label lists cut short in the published preview)."""
    return load_jsonl("coyo_labeled300m_preview_rows.jsonl")


def coyo_table(rows: list[dict]) -> pa.Table:
    """Rows as an Arrow table with COYO-700M's exact schema."""
    return pa.Table.from_pylist(rows, schema=schemas.PAIRS)


@pytest.fixture
def coyo_parquet(tmp_path: Path, coyo_rows: list[dict]) -> Path:
    """The real rows written as a COYO-700M Parquet file."""
    path = tmp_path / "coyo-700m-part-00000.parquet"
    pq.write_table(coyo_table(coyo_rows), path)
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """An empty catalog in a temporary home."""
    return Catalog(tmp_path / "home", create=True)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray with two CPUs and a small object store; yields its address."""
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=200 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
