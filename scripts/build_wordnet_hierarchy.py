"""Build coyo_db/data/imagenet21k_hypernyms.tsv.gz: which ImageNet synset lies under which.

Input: WordNet 3.0's noun database, ``data.noun`` (Debian's ``wordnet-base`` package installs
it as /usr/share/wordnet/data.noun; ImageNet's wnids are ``n`` + WordNet 3.0 noun offsets).

Output: a gzip'd TSV with a header line `child_wnid parent_wnid`, one edge a line, sorted. The
nodes are the 21,841 ImageNet-21k (fall11) synsets plus the ImageNet-1k ones (all but one of
which are among them). A node's parents are its nearest WordNet ancestors among the nodes,
following hypernym (``@``) and instance-hypernym (``@i``) pointers: where WordNet passes
through a synset that is not a node, the walk goes on above it. WordNet allows several parents
per synset (a DAG, not a tree), and so does the output.

    apt-get install -y wordnet-base
    python scripts/build_wordnet_hierarchy.py /usr/share/wordnet/data.noun

The gzip header carries no name and no time, so the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

from tsv_gz import write_tsv_gz

DATA = Path(__file__).resolve().parent.parent / "coyo_db" / "data"
DEFAULT_OUT = DATA / "imagenet21k_hypernyms.tsv.gz"
DEFAULT_SOURCE = Path("/usr/share/wordnet/data.noun")
HYPERNYM_SYMBOLS = ("@", "@i")


def parse_hypernyms(text: str) -> dict[str, list[str]]:
    """wnid -> the wnids of its hypernyms and instance hypernyms, for every noun synset."""
    hypernyms: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith(" "):  # the licence header lines start with spaces
            continue
        fields = line.split(" | ", 1)[0].split()
        offset, word_count = fields[0], int(fields[3], 16)
        at = 4 + 2 * word_count
        pointer_count = int(fields[at])
        parents = []
        for i in range(pointer_count):
            symbol, target, pos = fields[at + 1 + 4 * i : at + 4 + 4 * i]
            if symbol in HYPERNYM_SYMBOLS and pos == "n":
                parents.append("n" + target)
        hypernyms["n" + offset] = parents
    return hypernyms


def nearest_ancestor_edges(
    hypernyms: dict[str, list[str]], nodes: set[str]
) -> list[tuple[str, str]]:
    """(child, parent) for every node and each of its nearest ancestors among `nodes`."""
    missing = sorted(nodes - hypernyms.keys())
    if missing:
        raise SystemExit(f"{len(missing)} synsets are not WordNet 3.0 nouns, e.g. {missing[:3]}")
    edges = set()
    for node in nodes:
        seen: set[str] = set()
        frontier = list(hypernyms[node])
        while frontier:
            synset = frontier.pop()
            if synset in seen:
                continue
            seen.add(synset)
            if synset in nodes:
                edges.add((node, synset))
            else:
                frontier.extend(hypernyms.get(synset, []))
    return sorted(edges)


def read_nodes() -> set[str]:
    nodes = set()
    for name in ("imagenet21k.tsv.gz", "imagenet1k.tsv.gz"):
        with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
            next(fh)
            nodes.update(line.split("\t", 2)[1] for line in fh)
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, nargs="?", default=DEFAULT_SOURCE, help="data.noun")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .tsv.gz")
    args = parser.parse_args(argv)
    raw = args.source.read_bytes()
    edges = nearest_ancestor_edges(parse_hypernyms(raw.decode("utf-8")), read_nodes())
    data = write_tsv_gz(("child_wnid", "parent_wnid"), edges, args.out)
    print(f"sha256 {hashlib.sha256(raw).hexdigest()}  {args.source.name}")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}  {args.out.name} ({len(edges)} edges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
