"""How much disk an install of coyo-db with extras takes, and how much of it is CUDA.

Reads the installed distributions (their RECORD files, so only what pip installed counts),
follows the requirements of ``coyo-db[EXTRAS]`` through the environment, and prints the size
of that closure, the part that only a GPU uses (the ``nvidia-*`` and ``cuda-*`` wheels,
``triton``, and torch's own CUDA libraries), and what is left: an estimate of the same install
with torch's CPU wheels, which carry none of those.

    python scripts/install_size.py            # coyo-db[all]
    python scripts/install_size.py models     # coyo-db[models]
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

_CUDA_DISTS = re.compile(r"^(nvidia-|cuda-|triton$)")
_CUDA_FILES = re.compile(r"torch/lib/lib\w*(cuda|cudnn|nccl|nvshmem|cusparse|cublas)\w*\.so")


def _name(dist: metadata.Distribution) -> str:
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()


def closure(root: str, extras: Iterable[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions `root[extras]` needs, by normalised name."""
    found: dict[str, metadata.Distribution] = {}
    pending = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, wanted = pending.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[_name(dist)] = dist
        for text in dist.requires or ():
            requirement = Requirement(text)
            environments = [{"extra": e} for e in wanted] or [{"extra": ""}]
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def sizes(dist: metadata.Distribution) -> tuple[int, int]:
    """(all bytes, CUDA-only bytes) of the files `dist` installed."""
    total = cuda = 0
    for file in dist.files or ():
        path = Path(str(dist.locate_file(file)))
        try:
            size = path.stat().st_size
        except OSError:
            continue
        total += size
        if _CUDA_FILES.search(str(file).replace("\\", "/")):
            cuda += size
    if _CUDA_DISTS.match(_name(dist)):
        cuda = total
    return total, cuda


def main(argv: list[str]) -> None:
    extras = argv or ["all"]
    dists = closure("coyo-db", extras)
    total = cuda = 0
    for dist in dists.values():
        size, gpu = sizes(dist)
        total += size
        cuda += gpu
    print(f"coyo-db[{','.join(extras)}]: {len(dists)} distributions installed")
    print(f"  all files:            {total / 1e9:5.2f} GB")
    what = "nvidia-*, cuda-*, triton, torch's CUDA libs"
    print(f"  CUDA only:            {cuda / 1e9:5.2f} GB ({what})")
    print(f"  without them (CPU):   {(total - cuda) / 1e9:5.2f} GB")


if __name__ == "__main__":
    main(sys.argv[1:])
