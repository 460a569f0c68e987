"""The class lists shipped in the package: what label indices point into, for labelers and the
`taxonomies` table alike.

Two ship in ``coyo_db/data``: ``imagenet-21k`` (`imagenet21k.tsv.gz`: the 21,841 fall11 synsets
sorted by wnid, COYO-Labeled-300M's index order) and ``imagenet-1k`` (`imagenet1k.tsv.gz`: the
ILSVRC-2012 classes in their usual order, named as open_clip's zero-shot names them, with their
wnids, which map them onto ImageNet-21k). Each file is a gzipped TSV of index, wnid, name and
definition; :func:`load_taxonomy` reads it into rows of the catalog's `taxonomies` schema.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources

import pyarrow as pa

from coyo_db.errors import InputError

IMAGENET21K = "imagenet-21k"
IMAGENET1K = "imagenet-1k"

# The shipped class lists, by the name rows carry in their `taxonomy` column.
SHIPPED_FILES = {IMAGENET21K: "imagenet21k.tsv.gz", IMAGENET1K: "imagenet1k.tsv.gz"}


def available_taxonomies() -> list[str]:
    """Names of the taxonomies shipped with coyo-db."""
    return sorted(SHIPPED_FILES)


@cache
def load_taxonomy(name: str = IMAGENET21K) -> pa.Table:
    """The shipped class list `name` as rows of the catalog's `taxonomies` schema, in index
    order."""
    import pyarrow.csv as pacsv

    from coyo_db.catalog import schemas

    if name not in SHIPPED_FILES:
        raise InputError(f"unknown taxonomy {name!r}; known: {', '.join(available_taxonomies())}")
    data = resources.files("coyo_db.data").joinpath(SHIPPED_FILES[name])
    raw = gzip.decompress(data.read_bytes())
    table = pacsv.read_csv(
        pa.BufferReader(raw),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={
                "index": pa.int32(),
                "wnid": pa.string(),
                "name": pa.string(),
                "definition": pa.string(),
            }
        ),
    )
    taxonomy = pa.array([name] * table.num_rows, pa.string())
    return table.add_column(0, "taxonomy", taxonomy).select(schemas.TAXONOMIES.names)


def num_classes(name: str = IMAGENET21K) -> int:
    """How many classes taxonomy `name` has (label indices run from 0 to this minus one)."""
    return load_taxonomy(name).num_rows


def class_wnids(name: str = IMAGENET21K) -> list[str]:
    """The wnid of every class of taxonomy `name`, in index order."""
    return load_taxonomy(name).column("wnid").to_pylist()
