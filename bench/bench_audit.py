"""Benchmark: `coyo-db audit` recall per transform, false hits per distractor, and speed, scored
on the `contamination` table the audit writes at its default operating point.

Data, per split (dev, test; thresholds were chosen on dev only, the figures that count are
test's):

- *textured*: bench/audit_data.py (real pictures from Debian packages and scikit-image; the
  exact apt packages are listed there): references, seven transformed copies of each, and
  unrelated distractors, registered as refset ``bench``;
- *plain*: coyo_db/synth/plain_images.py (gradients, flat shapes, logos on plain backgrounds,
  icons, products on white, renders), seven transformed copies of each, and plain distractors
  (a share of them hard: the same colours in another direction, the same icon in another
  colour), registered as refset ``plain``.

Per split a fresh catalog registers both sets (`add_refset`), ingests every copy and distractor
(`ingest_images`), audits against ``bench`` (the images are described and their descriptors
stored), then audits against both sets (from the stored descriptors: search and verification
only). A copy counts as found when `contamination` holds a hit of it on its reference or on a
reference of the same group; a distractor with any hit is a false hit.

Baselines, from the pairs' evidence in `contamination_candidates` (every pair within 12 pHash
bits is a candidate): exact pHash equality (COYO's rule), pHash within 8 bits, and the
descriptor's cosine >= 0.89 alone. Run: ``python bench/bench_audit.py [--splits test]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from audit_data import TRANSFORMS, build
from common import OUT, save

REFERENCE_SET_SIZE = 50_000


def write_plain(folder: Path, split: str) -> dict:
    """The plain set of `split` as files; its truth like audit_data's manifest."""
    from coyo_db.synth.plain_images import plain_set

    marker = folder / "manifest.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "refs").mkdir(parents=True)
    (folder / "data").mkdir()
    data = plain_set(split)
    refs = []
    for i, ref in enumerate(data.references):
        name = f"plain-{ref.kind}-{i:03d}.png"
        (folder / "refs" / name).write_bytes(ref.data)
        refs.append(name)
    copies, distractors = [], []
    for j, copy in enumerate(data.copies):
        name = f"plain-copy-{j:04d}.{_extension(copy.data)}"
        (folder / "data" / name).write_bytes(copy.data)
        copies.append({"name": name, "ref": refs[copy.ref], "transform": copy.transform})
    for j, other in enumerate(data.distractors):
        name = f"plain-other-{j:04d}.{_extension(other.data)}"
        (folder / "data" / name).write_bytes(other.data)
        kind = f"{other.kind}{' (hard)' if other.hard_of is not None else ''}"
        distractors.append({"name": name, "kind": kind})
    manifest = {"copies": copies, "distractors": distractors}
    marker.write_text(json.dumps(manifest))
    return manifest


def _extension(data: bytes) -> str:
    return "png" if data.startswith(b"\x89PNG") else "jpg"


def run_split(split: str, textured: Path, plain: Path) -> dict:
    from coyo_db.audit.contamination import audit
    from coyo_db.audit.refset_job import add_refset
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images

    home = OUT / f"audit-home-{split}"
    shutil.rmtree(home, ignore_errors=True)
    catalog = Catalog.init(home)
    seconds = {}
    t0 = time.perf_counter()
    bench = add_refset(catalog, "bench", textured / split / "refs")
    plain_refs = add_refset(catalog, "plain", plain / "refs")
    seconds["refset_add"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingest = ingest_images(catalog, [textured / split / "data", plain / "data"])
    seconds["ingest"] = time.perf_counter() - t0
    first = audit(catalog, ["bench"])
    again = audit(catalog, ["bench", "plain"])
    for summary in (bench, plain_refs, ingest, first, again):
        print(summary.line(), file=sys.stderr)
    hits = catalog.sql(
        "SELECT i.member, c.refset, c.ref_path, c.method, c.ref_group FROM contamination c "
        "JOIN images i USING (id)"
    ).to_pylist()
    pairs = catalog.sql(
        "SELECT i.member, c.refset, c.ref_path, c.hamming, c.cosine, c.low_info "
        "FROM contamination_candidates c JOIN images i USING (id)"
    ).to_pylist()
    groups = catalog.sql("SELECT refset, ref_path, ref_group FROM refset_images").to_pylist()
    return {
        "hits": hits,
        "pairs": pairs,
        "groups": {(g["refset"], g["ref_path"]): g["ref_group"] for g in groups},
        "references": bench.images + plain_refs.images,
        "refset_add_images_per_s": (bench.images + plain_refs.images) / seconds["refset_add"],
        "ingest_images_per_s": ingest.rows_read / seconds["ingest"],
        "first_audit": {"images": first.images, "seconds": first.seconds, "timings": first.timings},
        "re_audit": {"images": again.images, "seconds": again.seconds, "timings": again.timings},
    }


def truth(manifest: dict, plain: dict, split: str) -> tuple[dict, dict]:
    """({copy name: (refset, ref, transform, set)}, {distractor name: kind})."""
    copies = {
        c["name"]: ("bench", c["ref"], c["transform"], "textured")
        for c in manifest["copies"]
        if c["split"] == split
    }
    for c in plain["copies"]:
        copies[c["name"]] = ("plain", c["ref"], c["transform"], "plain")
    distractors = {d["name"]: "textured" for d in manifest["distractors"] if d["split"] == split}
    distractors.update({d["name"]: f"plain {d['kind']}" for d in plain["distractors"]})
    return copies, distractors


def score(result: dict, copies: dict, distractors: dict) -> dict:
    """Recall per set and transform and false hits per distractor kind, of the audit's hits
    and of the baselines."""
    group = result["groups"]
    found: dict[str, set] = defaultdict(set)  # method -> copies found
    false: dict[str, set] = defaultdict(set)
    false_methods: dict[str, set] = defaultdict(set)  # distractor -> methods of its hits
    for hit in result["hits"]:
        member = hit["member"]
        if member in copies:
            refset, ref, _, _ = copies[member]
            same = group.get((refset, ref)) == group.get((hit["refset"], hit["ref_path"]))
            if hit["refset"] == refset and same:
                found["audit"].add(member)
        elif member in distractors:
            false["audit"].add(member)
            false_methods[member].add(hit["method"])
    exact_missed = set()
    for pair in result["pairs"]:
        member, hamming, cosine = pair["member"], pair["hamming"], pair["cosine"]
        rules = {
            "exact pHash": hamming == 0,
            "pHash <= 8": hamming <= 8,
            "descriptor >= 0.89": cosine is not None and cosine >= 0.89,
        }
        right = member in copies and copies[member][:2] == (pair["refset"], pair["ref_path"])
        for name, holds in rules.items():
            if holds and right:
                found[name].add(member)
            elif holds and member in distractors:
                false[name].add(member)
        if right and hamming == 0 and member not in found["audit"]:
            exact_missed.add(member)
    out: dict = {"copies": len(copies), "distractors": len(distractors), "methods": {}}
    sets = sorted({c[3] for c in copies.values()})
    transforms = sorted({c[2] for c in copies.values()})
    kinds = sorted(set(distractors.values()))
    for method in ("audit", "exact pHash", "pHash <= 8", "descriptor >= 0.89"):
        per = {}
        for which in sets:
            names = [n for n, c in copies.items() if c[3] == which]
            per[which] = sum(n in found[method] for n in names) / len(names)
        by_transform = {}
        for which in sets:
            for t in transforms:
                names = [n for n, c in copies.items() if c[3] == which and c[2] == t]
                if names:
                    by_transform[f"{which}/{t}"] = sum(n in found[method] for n in names) / len(
                        names
                    )
        by_kind = {
            k: sum(n in false[method] for n, kind in distractors.items() if kind == k)
            for k in kinds
        }
        out["methods"][method] = {
            "recall": len(found[method]) / len(copies),
            "recall_by_set": per,
            "recall_by_transform": by_transform,
            "false_hits": len(false[method]),
            "false_hit_rate": len(false[method]) / len(distractors),
            "false_hits_by_kind": by_kind,
        }
    out["identical_phash_missed"] = sorted(exact_missed)
    # false hits the pHash floor makes (an equal pHash is a hit by COYO's rule) and the others
    floor = sum("phash_exact" in m for m in false_methods.values())
    out["false_hits_by_rule"] = {
        "equal pHash (the floor)": floor,
        "other methods": len(false_methods) - floor,
    }
    return out


def search_time_at_scale(dim: int, per: int = 1000, seed: int = 0) -> float:
    """Seconds to search `per` queries in a flat index of 50,000 descriptors: what one
    reference set of 50,000 images costs a batch of 1,000 images (the
    vectors are random: the time depends on the count and dimension only)."""
    import faiss

    rng = np.random.default_rng(seed)
    base = rng.standard_normal((REFERENCE_SET_SIZE, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(base)
    queries = base[:per] + 0.1 * rng.standard_normal((per, dim)).astype(np.float32)
    start = time.perf_counter()
    index.search(queries, 10)
    return time.perf_counter() - start


def main() -> None:
    from coyo_db.audit.decision import DEFAULT_POINT
    from coyo_db.ingest.models.copy_descriptors import load_descriptor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["dev", "test"], choices=["dev", "test"])
    args = parser.parse_args()
    textured = OUT / "audit-data"
    manifest = build(textured)
    report: dict = {"point": DEFAULT_POINT.__dict__, "textured_transforms": list(TRANSFORMS)}
    for split in args.splits:
        plain_folder = OUT / "audit-plain" / split
        plain = write_plain(plain_folder, split)
        copies, distractors = truth(manifest, plain, split)
        result = run_split(split, textured, plain_folder)
        scored = score(result, copies, distractors)
        scored["speed"] = {
            key: result[key]
            for key in (
                "references",
                "refset_add_images_per_s",
                "ingest_images_per_s",
                "first_audit",
                "re_audit",
            )
        }
        report[split] = scored
        audit_row = scored["methods"]["audit"]
        print(
            f"{split}: audit recall {audit_row['recall']:.3f} "
            f"({', '.join(f'{k} {v:.3f}' for k, v in audit_row['recall_by_set'].items())}), "
            f"false hits {audit_row['false_hits']}/{scored['distractors']} "
            f"({', '.join(f'{k} {v}' for k, v in scored['false_hits_by_rule'].items())}); "
            f"exact pHash "
            f"{scored['methods']['exact pHash']['recall']:.3f}, identical pHash missed "
            f"{len(scored['identical_phash_missed'])}",
            file=sys.stderr,
        )
    dim = load_descriptor().dim
    report["search_1000_images_50k_refs_s"] = search_time_at_scale(dim)
    save("audit", report)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
