"""Build coyo_db/data/imagenet21k.tsv.gz, the ImageNet-21k taxonomy shipped in the package.

Input: the timm wheel (or its unpacked `timm/data/_info` folder), which carries

- imagenet22k_synsets.txt             the 21,841 fall11 synsets sorted by wnid (index order)
- imagenet_synset_to_lemma.txt        wnid <TAB> lemmas ("bootee, bootie")
- imagenet_synset_to_definition.txt   wnid <TAB> WordNet gloss

Output: a gzip'd TSV with a header line `index wnid name definition`, one synset a line in
index order. The gzip header carries no name and no time, so the same input gives the same
bytes.

    pip download timm --no-deps -d /tmp/timm
    python scripts/build_taxonomy.py /tmp/timm/timm-*.whl
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import zipfile
from pathlib import Path

from tsv_gz import write_tsv_gz

SYNSETS = "imagenet22k_synsets.txt"
LEMMAS = "imagenet_synset_to_lemma.txt"
DEFINITIONS = "imagenet_synset_to_definition.txt"
INFO_DIR = "timm/data/_info"
EXPECTED_CLASSES = 21841
WNID = re.compile(r"^n\d{8}$")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "coyo_db" / "data" / "imagenet21k.tsv.gz"


def read_inputs(source: Path) -> dict[str, str]:
    """The three text files, from a timm wheel or from a folder holding them."""
    names = (SYNSETS, LEMMAS, DEFINITIONS)
    if source.is_dir():
        folder = source / INFO_DIR if (source / INFO_DIR).is_dir() else source
        return {name: (folder / name).read_text("utf-8") for name in names}
    with zipfile.ZipFile(source) as wheel:
        return {name: wheel.read(f"{INFO_DIR}/{name}").decode("utf-8") for name in names}


def _mapping(text: str, label: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        wnid, sep, value = line.partition("\t")
        if not sep or not WNID.match(wnid) or not value.strip() or "\t" in value:
            raise SystemExit(f"{label} line {number} is not 'wnid<TAB>text': {line!r}")
        mapping[wnid] = value.strip()
    return mapping


def build_rows(inputs: dict[str, str]) -> list[tuple[int, str, str, str]]:
    """(index, wnid, name, definition) in index order, after checking the inputs agree."""
    wnids = inputs[SYNSETS].split()
    if len(wnids) != EXPECTED_CLASSES:
        raise SystemExit(f"{SYNSETS} lists {len(wnids)} synsets, expected {EXPECTED_CLASSES}")
    if wnids != sorted(set(wnids)) or not all(WNID.match(w) for w in wnids):
        raise SystemExit(f"{SYNSETS} is not a sorted list of distinct wnids")
    lemmas = _mapping(inputs[LEMMAS], LEMMAS)
    definitions = _mapping(inputs[DEFINITIONS], DEFINITIONS)
    missing = [w for w in wnids if w not in lemmas or w not in definitions]
    if missing:
        raise SystemExit(f"{len(missing)} synsets lack a name or definition, e.g. {missing[:3]}")
    return [(i, w, lemmas[w], definitions[w]) for i, w in enumerate(wnids)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="timm wheel, or a folder with the _info files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tsv.gz")
    args = parser.parse_args(argv)
    inputs = read_inputs(args.source)
    rows = build_rows(inputs)
    data = write_tsv_gz(("index", "wnid", "name", "definition"), rows, args.out)
    for name, text in sorted(inputs.items()):
        print(f"sha256 {hashlib.sha256(text.encode()).hexdigest()}  {name}")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  {args.out.name} ({len(rows)} synsets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
