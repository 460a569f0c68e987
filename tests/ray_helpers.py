"""Workers that die once (a marker file remembers), so that the Ray engine tests can watch
Ray retry them. The small local Ray itself is conftest.py's `ray_cluster` fixture."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def dying_read(real: Callable[..., Iterator[Any]], marker: Path, shard_suffix: str):
    """`real` (a shard reader), except that its first attempt at the shard whose path ends with
    `shard_suffix` kills its process after the first table."""

    def read(shard, **kwargs):  # type: ignore[no-untyped-def]
        for index, table in enumerate(real(shard, **kwargs)):
            yield table
            if index == 0 and shard.path.endswith(shard_suffix) and not marker.exists():
                marker.touch()
                os._exit(1)

    return read


def dying_stage(stage: type, marker: Path) -> type:
    """A subclass of the model actor `stage` whose first instance to see a batch dies."""

    class DyingStage(stage):  # type: ignore[misc, valid-type]
        def __call__(self, table):  # type: ignore[no-untyped-def]
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(table)

    return DyingStage
