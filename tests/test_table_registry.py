"""The registry of catalog tables: one name, schema and key per table, and the model families."""

from __future__ import annotations

import pyarrow as pa
import pytest

from coyo_db.catalog import schemas, tables
from coyo_db.errors import CatalogError


def test_fixed_tables_are_named_once_and_keyed_by_their_own_columns():
    assert len(tables.FIXED) == 15
    for name, spec in tables.FIXED.items():
        assert spec.name == name and spec.doc
        assert set(spec.key) <= set(spec.schema.names), name
        assert tables.by_name(name) is spec


def test_family_tables_are_named_by_the_model_slug():
    clip = tables.embeddings("open_clip:ViT-B-32:laion2b_s34b_b79k", 512, 512)
    assert clip.name == "embeddings__open_clip_vit_b_32_laion2b_s34b_b79k"
    assert clip.schema == schemas.embeddings_schema(512, 512)
    assert "clip_similarity" in clip.schema.names
    checkpoint = tables.embeddings("open_clip:ViT-L-14:/models/my ckpt.pt", 768, None)
    assert checkpoint.name == "embeddings__open_clip_vit_l_14_my_ckpt"
    assert tables.embeddings(clip.name.removeprefix("embeddings__"), 512, 512).name == clip.name
    descriptors = tables.refset_descriptors("effnet-lite0", 1280)
    assert descriptors.name == "refset_descriptors__effnet_lite0"
    assert descriptors.schema.field("descriptor").type == pa.list_(pa.float16(), 1280)
    assert descriptors.key == ("refset", "ref_id")


@pytest.mark.parametrize(
    "spec",
    ["effnet-lite0", "open_clip:ViT-B-32:laion2b", "isc:/a/b/isc_ft_v107.pth", "minilm", "x_y"],
)
def test_the_slug_is_the_model_registrys(spec):
    from coyo_db.ingest.registry import table_slug

    assert tables.slug(spec) == table_slug(spec)


def test_by_name_rebuilds_family_specs_from_a_tables_schema():
    spec = tables.embeddings("effnet-lite0", 1280, None)
    again = tables.by_name(spec.name, spec.schema)
    assert (again.name, again.schema) == (spec.name, spec.schema)
    desc = tables.refset_descriptors("effnet-lite0", 64)
    assert tables.by_name(desc.name, desc.schema).schema == desc.schema
    with pytest.raises(CatalogError, match="no catalog table"):
        tables.by_name("pairz")


def test_ensure_creates_a_table_once(catalog):
    first = catalog.ensure(tables.SCORES)
    assert first.schema == tables.SCORES.schema and first.count_rows() == 0
    catalog.append(tables.SCORES.name, tables.SCORES.from_pylist([{"id": 1, "score": "x"}]))
    assert catalog.ensure(tables.SCORES).count_rows() == 1
