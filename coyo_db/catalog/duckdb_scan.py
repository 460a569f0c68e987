"""Lance tables as DuckDB sees them: float16 vectors widened to float32 on the fly.

Embedding tables store vectors as fixed-size float16 lists (half the bytes), a type DuckDB's
Arrow scan does not read. A table holding float16 is registered through
:class:`WidenedDataset`, which presents float32 in its schema and casts each scanned batch;
projection and filter push-down still reach Lance. Tables without float16 are registered as
they are, with no wrapper in the way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from lance.dataset import LanceDataset


def widen_type(kind: pa.DataType) -> pa.DataType:
    """`kind` with every float16 (also inside lists) replaced by float32."""
    if pa.types.is_float16(kind):
        return pa.float32()
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(widen_type(kind.value_type), kind.list_size)
    if pa.types.is_list(kind):
        return pa.list_(widen_type(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(widen_type(kind.value_type))
    return kind


def scannable(dataset: LanceDataset) -> LanceDataset:
    """The object to register in DuckDB for `dataset`."""
    if all(widen_type(field.type) == field.type for field in dataset.schema):
        return dataset
    return WidenedDataset(dataset)


class WidenedDataset(LanceDataset):
    """A Lance dataset whose float16 columns scan as float32 (see the module docstring)."""

    def __init__(self, dataset: LanceDataset) -> None:
        self.__dict__.update(dataset.__dict__)
        self._inner = dataset
        self._widened = pa.schema(
            [pa.field(f.name, widen_type(f.type), f.nullable) for f in dataset.schema]
        )

    @property
    def schema(self) -> pa.Schema:
        return self._widened

    def scanner(self, columns: list[str] | None = None, filter: Any = None, **_: Any):  # type: ignore[override]
        inner = self._inner.scanner(columns=columns, filter=filter)
        names = columns if columns is not None else self._widened.names
        schema = pa.schema([self._widened.field(name) for name in names])

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in inner.to_batches():
                yield batch.cast(schema)

        return pads.Scanner.from_batches(batches(), schema=schema)
