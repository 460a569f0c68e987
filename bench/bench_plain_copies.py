"""Benchmark: the layout verification (coyo_db.audit.layout) on plain, low-texture images.

Data: the *test* split of coyo_db.synth.plain_images (never used to tune; the thresholds were
chosen on the dev split): references of seven kinds (gradients, radial gradients, flat shapes,
logos, icons, products on white, renders), one planted copy of each per transform, and
distractors of the same kinds, 40% of them hard variants of a reference (the same gradient
colours in another direction, the same icon in other colours, the same logo elsewhere...).

Pairs compared, each with ``compare(query, reference)`` at the module's thresholds:

- every copy against its own reference (recall, per transform and per kind);
- every distractor against every reference (false hits, per distractor kind, reported for the
  pairs of the same kind and for all pairs);
- every copy against every other reference (more false-hit chances, unless ``--no-cross``).

Baselines on the same pairs: exact pHash equality (COYO's rule) and pHash Hamming <= 8, with
coyo_db.ingest.phash (bit-identical to imagehash.phash). Time per pair: ``compare`` alone, on
layouts already decoded, in this process (pin it to one core: ``taskset -c 1``).

Run: ``python bench/bench_plain_copies.py [--references 70] [--distractors 350]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import save


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b, strict=True)])


def main() -> None:
    import cv2

    from coyo_db.audit import layout
    from coyo_db.ingest.phash import phash_bytes_many
    from coyo_db.synth.plain_images import KINDS, TRANSFORMS, plain_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=70)
    parser.add_argument("--distractors", type=int, default=350)
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cross", action="store_true", help="skip copies x other references")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    t0 = time.perf_counter()
    refs, copies, distractors = plain_set(args.split, args.references, args.distractors, args.seed)
    t1 = time.perf_counter()
    ref_layouts = [layout.layout_of(r.data) for r in refs]
    copy_layouts = [layout.layout_of(c.data) for c in copies]
    dis_layouts = [layout.layout_of(d.data) for d in distractors]
    t2 = time.perf_counter()
    assert all(x is not None for x in ref_layouts + copy_layouts + dis_layouts)
    n_images = len(refs) + len(copies) + len(distractors)
    ref_hash = phash_bytes_many([r.data for r in refs])
    copy_hash = phash_bytes_many([c.data for c in copies])
    dis_hash = phash_bytes_many([d.data for d in distractors])

    def run(pairs: list[tuple[object, int]]) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        scores = np.array([layout.compare(q, ref_layouts[i]).similarity for q, i in pairs])  # type: ignore[arg-type]
        return scores, time.perf_counter() - start

    # copies against their reference
    own = [(copy_layouts[k], c.ref) for k, c in enumerate(copies)]
    copy_scores, copy_time = run(own)
    copy_ham = hamming(copy_hash, ref_hash[[c.ref for c in copies]])
    # distractors against every reference
    dis_pairs = [(j, i) for j in range(len(distractors)) for i in range(len(refs))]
    dis_scores, dis_time = run([(dis_layouts[j], i) for j, i in dis_pairs])
    dis_ham = hamming(dis_hash[[j for j, _ in dis_pairs]], ref_hash[[i for _, i in dis_pairs]])
    same = np.array([distractors[j].kind == refs[i].kind for j, i in dis_pairs])
    hard = np.array([distractors[j].hard_of == i for j, i in dis_pairs])
    # copies against every other reference
    cross_pairs = [] if args.no_cross else [
        (k, i) for k, c in enumerate(copies) for i in range(len(refs)) if i != c.ref
    ]  # fmt: skip
    cross_scores, cross_time = run([(copy_layouts[k], i) for k, i in cross_pairs])
    cross_ham = hamming(
        copy_hash[[k for k, _ in cross_pairs]], ref_hash[[i for _, i in cross_pairs]]
    )

    threshold = layout.LAYOUT_MIN_SIMILARITY
    methods = {
        "layout": lambda s, h: s >= threshold,
        "phash==": lambda s, h: h == 0,
        "phash<=8": lambda s, h: h <= 8,
    }
    out: dict = {"split": args.split, "threshold": threshold, "pairs": {}}
    print(f"plain-image copies, {args.split} split (seed {args.seed}); layout threshold "
          f"LAYOUT_MIN_SIMILARITY = {threshold}")  # fmt: skip
    print(f"pairs compared: {len(own)} copies x their reference; {len(dis_pairs)} distractors x "
          f"every reference ({int(same.sum())} of the same kind, {int(hard.sum())} of them a "
          f"distractor against the reference it is a hard variant of); {len(cross_pairs)} "
          "copies x every other reference")  # fmt: skip

    def table(title: str, key: str, groups: list[str], labels: list[str]) -> None:
        print(f"\n{title}")
        print(f"{key:<12}{'n':>6}" + "".join(f"{m:>10}" for m in methods))
        rows = {}
        for group in [*groups, "all"]:
            mask = np.array([g == group or group == "all" for g in labels])
            hits = {
                m: float(f(copy_scores[mask], copy_ham[mask]).mean()) for m, f in methods.items()
            }
            rows[group] = {"n": int(mask.sum()), **hits}
            print(
                f"{group:<12}{int(mask.sum()):>6}" + "".join(f"{hits[m]:>10.3f}" for m in methods)
            )
        out[f"recall_by_{key}"] = rows

    table("recall per transform (share of copies confirmed)", "transform", list(TRANSFORMS),
          [c.transform for c in copies])  # fmt: skip
    table("recall per kind", "kind", list(KINDS), [refs[c.ref].kind for c in copies])

    print("\nfalse hits per distractor kind (pairs hit / pairs compared)")
    header = f"{'kind':<10}{'pairs':>7}{'same-kind':>10}"
    print(header + "".join(f"{m + ' same':>15}{m + ' all':>15}" for m in methods))
    false_rows = {}
    kinds = np.array([distractors[j].kind for j, _ in dis_pairs])
    for kind in [*KINDS, "all"]:
        mask = (kinds == kind) | (kind == "all")
        row = {"pairs": int(mask.sum()), "same_kind_pairs": int((mask & same).sum())}
        line = f"{kind:<10}{row['pairs']:>7}{row['same_kind_pairs']:>10}"
        for m, f in methods.items():
            hit = f(dis_scores, dis_ham)
            row[f"{m}_same"], row[f"{m}_all"] = (
                int((hit & mask & same).sum()),
                int((hit & mask).sum()),
            )
            line += f"{row[f'{m}_same']:>15}{row[f'{m}_all']:>15}"
        false_rows[kind] = row
        print(line)
    out["false_hits_by_kind"] = false_rows
    for m, f in methods.items():
        hits, hard_hits = f(dis_scores, dis_ham), f(dis_scores, dis_ham) & hard
        cross = f(cross_scores, cross_ham) if cross_pairs else np.zeros(0, bool)
        share = (hits.sum() + cross.sum()) / max(1, len(hits) + len(cross))
        print(f"{m:<10} false hits: {int(hits.sum())}/{len(hits)} distractor pairs "
              f"({100 * hits.mean():.3f}%; same kind {int((hits & same).sum())}/{int(same.sum())}, "
              f"hard variant vs its reference {int(hard_hits.sum())}/{int(hard.sum())}), "
              f"{int(cross.sum())}/{len(cross)} copy x other-reference pairs; "
              f"{100 * share:.3f}% of all negative pairs")  # fmt: skip
        out["pairs"][m] = {"distractor_hits": int(hits.sum()), "cross_hits": int(cross.sum())}
    top = np.sort(dis_scores)[::-1][:5]
    low = np.round(np.sort(copy_scores)[:5], 3).tolist()
    print(f"highest distractor similarities: {np.round(top, 3).tolist()}; lowest copies: {low}")

    total_pairs = len(own) + len(dis_pairs) + len(cross_pairs)
    total_time = copy_time + dis_time + cross_time
    timing = {
        "ms_per_pair_all": 1000 * total_time / total_pairs,
        "ms_per_copy_pair": 1000 * copy_time / len(own),
        "ms_per_distractor_pair": 1000 * dis_time / len(dis_pairs),
        "ms_per_layout": 1000 * (t2 - t1) / n_images,
        "generate_s": t1 - t0,
    }
    out["timing"] = timing
    print(f"\ntime per compare (one core, layouts decoded): {timing['ms_per_pair_all']:.2f} ms "
          f"per pair over all {total_pairs} pairs; {timing['ms_per_copy_pair']:.2f} ms per copy x "
          f"its reference; {timing['ms_per_distractor_pair']:.2f} ms per distractor x reference. "
          f"layout_of: {timing['ms_per_layout']:.2f} ms per image")  # fmt: skip
    print(f"saved {save('bench_plain_copies', out)}")


if __name__ == "__main__":
    main()
