"""One id resolver: the same shards get the same ids whether ingested or audited from paths."""

from __future__ import annotations

import pyarrow as pa

from coyo_db.catalog import Catalog, tables
from coyo_db.ingest.image_ids import INT64_MAX, IdResolver, as_int64, hashed_id
from coyo_db.ingest.image_types import ImageRecord
from tests import audit_helpers

audited = audit_helpers.audited  # the audit tests' shared setup, once a session


def _record(member: str, key: str, meta: dict | None = None, url: str | None = None):
    return ImageRecord("/data/shards/00000.tar", member, key, b"", url=url, meta=meta or {})


def test_origins_in_order_of_preference(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    pairs = [{name: None for name in tables.PAIRS.schema.names} | {"id": 77, "url": "u://a"}]
    catalog.append(tables.PAIRS.name, pa.Table.from_pylist(pairs, schema=tables.PAIRS.schema))
    records = [
        _record("a.jpg", "000000001", {"id": 5}),  # json wins
        _record("b.jpg", "000000002", {"id": "6"}, url="u://a"),  # a numeric string is json too
        _record("c.jpg", "000000003", {}, url="u://a"),  # url
        _record("d.jpg", "000000004", {}, url="u://nowhere"),  # key
        _record("e.jpg", "cat", {}),  # hash
        _record("f.jpg", "99999999999999999999", {"id": 2**70}),  # out of int64: hash
    ]
    resolver = IdResolver(catalog)
    ids, origins = resolver.resolve(records)
    resolver.close()
    assert origins == ["json", "json", "url", "key", "hash", "hash"]
    assert ids[:4].tolist() == [5, 6, 77, 4]
    assert ids[4] == hashed_id("/elsewhere/00000.tar", "e.jpg"), "the shard's folder plays no part"
    assert 0 <= ids[5] <= INT64_MAX


def test_as_int64_refuses_what_is_not_an_int64():
    assert as_int64(12) == 12 and as_int64("-3") == -3
    assert as_int64(True) is None and as_int64(1.5) is None and as_int64("12a") is None
    assert as_int64(2**63) is None and as_int64(str(2**64)) is None


def test_one_connection_per_run(tmp_path, monkeypatch):
    catalog = Catalog(tmp_path / "home", create=True)
    row = {name: None for name in tables.PAIRS.schema.names} | {"id": 1, "url": "u://x"}
    catalog.append(tables.PAIRS.name, pa.Table.from_pylist([row], schema=tables.PAIRS.schema))
    opened = []
    real = Catalog.connect

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Catalog, "connect", counting)
    resolver = IdResolver(catalog)
    for batch in range(5):
        ids, _ = resolver.resolve([_record(f"{batch}.jpg", "k", url="u://x")])
        assert ids.tolist() == [1]
    resolver.close()
    assert len(opened) == 1


def test_audit_of_raw_shards_names_the_ids_ingest_gives(audited):
    """A removal list from `audit --path` matches the ids the same shards get when ingested."""
    from coyo_db.audit.contamination import audit

    catalog, _ = audited
    ingested = set(catalog.sql("SELECT id FROM images")["id"].to_pylist())
    hits = catalog.sql("SELECT DISTINCT id FROM contamination ORDER BY id")["id"].to_pylist()
    folder = catalog.sql("SELECT shard FROM images LIMIT 1")["shard"][0].as_py()
    audit(catalog, ["mini"], paths=[folder], workers=0)
    from_paths = catalog.sql("SELECT DISTINCT id FROM contamination ORDER BY id")["id"].to_pylist()
    assert from_paths == hits and set(hits) <= ingested
    audit(catalog, ["mini"], workers=0)  # leave the shared catalog as the other tests expect
