"""Build coyo_db/data/imagenet1k.tsv.gz, the ImageNet-1k taxonomy shipped in the package.

Inputs, both from installed packages:

- open_clip's ``zero_shot_metadata.IMAGENET_CLASSNAMES``: the 1,000 class names in the standard
  class order (the names CLIP's zero-shot evaluation uses: "tench", "goldfish", ...);
- timm's ``data/_info/imagenet_synsets.txt`` (the 1,000 wnids in the same order, sorted) and
  ``imagenet_synset_to_definition.txt`` (their WordNet glosses).

Output: a gzip'd TSV with a header line `index wnid name definition`, one class a line in index
order, in the same layout as imagenet21k.tsv.gz. Every wnid but one (n04399382 "teddy bear",
which the fall11 release lacks) is also an ImageNet-21k class: that is how ImageNet-1k labels
map onto the 21k index space. The gzip header
carries no name and no time, so the same input gives the same bytes.

    python scripts/build_imagenet1k_taxonomy.py
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sys
from pathlib import Path

from tsv_gz import write_tsv_gz

EXPECTED_CLASSES = 1000
OUTSIDE_21K = ["n04399382"]  # teddy, teddy bear
WNID = re.compile(r"^n\d{8}$")
DATA = Path(__file__).resolve().parent.parent / "coyo_db" / "data"
DEFAULT_OUT = DATA / "imagenet1k.tsv.gz"


def read_inputs() -> tuple[list[str], list[str], dict[str, str]]:
    """(class names, wnids, wnid -> definition) from open_clip and timm."""
    import timm
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    info = Path(timm.__file__).parent / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text("utf-8").split()
    definitions = {}
    for line in (info / "imagenet_synset_to_definition.txt").read_text("utf-8").splitlines():
        wnid, _, gloss = line.partition("\t")
        definitions[wnid] = gloss.strip()
    return list(IMAGENET_CLASSNAMES), wnids, definitions


def build_rows(
    names: list[str], wnids: list[str], definitions: dict[str, str], known_21k: set[str]
) -> list[tuple[int, str, str, str]]:
    """(index, wnid, name, definition) in index order, after checking the inputs agree."""
    if len(names) != EXPECTED_CLASSES or len(wnids) != EXPECTED_CLASSES:
        raise SystemExit(f"expected {EXPECTED_CLASSES} names and wnids: {len(names)}, {len(wnids)}")
    if wnids != sorted(set(wnids)) or not all(WNID.match(w) for w in wnids):
        raise SystemExit("imagenet_synsets.txt is not a sorted list of distinct wnids")
    # Not all distinct: open_clip names two classes "missile" and two "sunglasses" (as CLIP's
    # evaluation does); the wnids tell them apart.
    if any("\t" in n or "\n" in n or not n.strip() for n in names):
        raise SystemExit("the class names are not one-line names")
    missing = [w for w in wnids if not definitions.get(w)]
    if missing:
        raise SystemExit(f"{len(missing)} synsets lack a definition, e.g. {missing[:3]}")
    outside = [w for w in wnids if w not in known_21k]
    if outside != OUTSIDE_21K:  # the one ILSVRC-2012 class the fall11 release lacks
        raise SystemExit(f"wnids outside ImageNet-21k: {outside}, expected {OUTSIDE_21K}")
    return [(i, w, names[i], definitions[w]) for i, w in enumerate(wnids)]


def known_21k_wnids() -> set[str]:
    with gzip.open(DATA / "imagenet21k.tsv.gz", "rt", encoding="utf-8") as fh:
        next(fh)
        return {line.split("\t", 2)[1] for line in fh}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tsv.gz")
    args = parser.parse_args(argv)
    names, wnids, definitions = read_inputs()
    rows = build_rows(names, wnids, definitions, known_21k_wnids())
    data = write_tsv_gz(("index", "wnid", "name", "definition"), rows, args.out)
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  {args.out.name} ({len(rows)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
