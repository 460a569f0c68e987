"""Write the package's data tables as gzipped TSV, byte for byte reproducible (no name or time
in the gzip header), so that a rebuild can be checked against the shipped file."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_tsv_gz(header: Sequence[str], rows: Iterable[Sequence[object]], out: Path) -> bytes:
    """Write `header` and `rows` (tab-separated, one line each) to `out`; returns the bytes."""
    text = io.StringIO()
    text.write("\t".join(header) + "\n")
    for row in rows:
        text.write("\t".join(map(str, row)) + "\n")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    data = buffer.getvalue()
    out.write_bytes(data)
    return data
