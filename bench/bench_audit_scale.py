"""Benchmark: the contamination audit against a large reference set: `refset add` speed and the
speed of a re-audit of images whose descriptors are stored.

Data (seeded, cached under bench/out/audit-scale-*): `--refs` synthetic pictures
(:func:`coyo_db.synth.images.picture`: gradients, shapes and noise at web-like sizes) as the
reference set ``big``; one blank frame as the set ``blank``; `--images` dataset images: unrelated
pictures of the same kind plus `--copies` planted copies of ``big`` references (resized,
cropped, recompressed or mirrored: :data:`coyo_db.synth.images.NEAR_COPY_KINDS`).

Steps, each timed end to end through the library calls behind the commands, in a fresh catalog:

1. ``add_refset(blank)`` and ``add_refset(big)``: references per second;
2. ``ingest_images`` of the dataset;
3. ``audit(["blank"])``: describes every dataset image and stores its descriptor (a blank
   reference settles its candidates without verification, so this is decode, describe and
   store): images described per second with the same model, the baseline ``refset add`` is
   held to (``refset add`` describes each reference once, as the audit does an image, and
   also computes its reference groups);
4. ``audit(["big"])``: the re-audit, from the stored descriptors: search and verification
   only; images per second against the target of 500, the time per stage, the share of images
   that needed verification, and the recall of the planted copies (as a check that the run
   audited something); it computes and stores the local features of the references it
   verifies against, so it runs twice: the second reads them, as every later audit of the set
   does; then again at each ``--verify-above`` floor (default 0.5), the same figures: the
   speed / recall trade of the verification floor.

``--audits-only`` runs step 4 alone on the catalog a full run left behind.

Synthetic pictures of one kind resemble each other more than web images do, so the share of
images verified here is pessimistic. Run: ``python bench/bench_audit_scale.py --refs 50000``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import OUT, save

RE_AUDIT_TARGET = 500.0  # images per second on this 2-core machine
PER_SHARD = 1000


def _grey():  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.new("RGB", (256, 256), (128, 128, 128))


def build(refs: int, images: int, copies: int, seed: int = 0) -> tuple[Path, dict]:
    """The cached data folder and its truth ({copy key: reference member})."""
    from coyo_db.synth.images import (
        NEAR_COPY_KINDS,
        jpeg_bytes,
        near_copy,
        picture,
        write_id_shard,
    )

    folder = OUT / f"audit-scale-{refs}-{images}-{copies}-{seed}"
    marker = folder / "truth.json"
    if marker.exists():
        return folder, json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    copied = set(rng.choice(refs, size=min(copies, refs), replace=False).tolist())
    truth: dict[str, str] = {}
    kept: dict[int, object] = {}
    (folder / "blank").mkdir(parents=True)
    write_id_shard(folder / "blank" / "00000.tar", [("blank", jpeg_bytes(_grey()), 0)])
    (folder / "big").mkdir()
    samples: list[tuple[str, bytes, int]] = []
    for i in range(refs):
        size = int(rng.integers(256, 640)), int(rng.integers(256, 640))
        image = picture(rng, *size)
        if i in copied:
            kept[i] = image
        samples.append((f"{i:07d}", jpeg_bytes(image), i))
        if len(samples) == PER_SHARD or i == refs - 1:
            write_id_shard(folder / "big" / f"{i // PER_SHARD:05d}.tar", samples)
            samples = []
    (folder / "data").mkdir()
    samples = []
    planted = sorted(kept)
    for j in range(images):
        key = f"{j:07d}"
        if j < len(planted):
            ref = planted[j]
            kind = NEAR_COPY_KINDS[j % len(NEAR_COPY_KINDS)]
            data = jpeg_bytes(near_copy(kept[ref], kind, rng))
            truth[key] = f"{ref // PER_SHARD:05d}.tar/{ref:07d}.jpg"
        else:
            size = int(rng.integers(256, 640)), int(rng.integers(256, 640))
            data = jpeg_bytes(picture(rng, *size))
        samples.append((key, data, 10_000_000 + j))
        if len(samples) == PER_SHARD or j == images - 1:
            write_id_shard(folder / "data" / f"{j // PER_SHARD:05d}.tar", samples)
            samples = []
    marker.write_text(json.dumps(truth))
    return folder, truth


def run(refs: int, images: int, copies: int, floors: list[float], audits_only: bool) -> dict:
    from coyo_db.audit.contamination import audit
    from coyo_db.audit.decision import DEFAULT_POINT
    from coyo_db.audit.refset_job import add_refset
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images

    folder, truth = build(refs, images, copies)
    home = OUT / "audit-scale-home"
    seconds: dict[str, float] = {}

    def step(name: str, fn):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {seconds[name]:.1f} s  {result.line()}", file=sys.stderr)
        return result

    out: dict = {"planted_copies": len(truth)}
    if audits_only:
        catalog = Catalog(home)
        held = catalog.sql("SELECT count(*) AS n FROM refset_images WHERE refset = 'big'")
        if held["n"][0].as_py() != refs:
            sys.exit(f"{home} holds no set 'big' of {refs} references: run without --audits-only")
    else:
        shutil.rmtree(home, ignore_errors=True)
        catalog = Catalog.init(home)
        step("refset add blank", lambda: add_refset(catalog, "blank", folder / "blank"))
        big = step("refset add big", lambda: add_refset(catalog, "big", folder / "big"))
        step("ingest images", lambda: ingest_images(catalog, [folder / "data"]))
        first = step("first audit", lambda: audit(catalog, ["blank"]))
        described_per_s = first.images / seconds["first audit"]
        refset_per_s = big.images / seconds["refset add big"]
        out |= {
            "refset_add_per_s": refset_per_s,
            "ingest_images_per_s": images / seconds["ingest images"],
            "first_audit_described_per_s": described_per_s,
            "refset_add_vs_describe": refset_per_s / described_per_s,
            "first_audit_timings": first.timings,
        }
    out["references"] = refs
    # The first re-audit computes (and stores) the local features of the references it
    # verifies against; the second reads them: the steady state of later audits. The same
    # audit run again would find its units done, so the second runs at a verification floor
    # under the candidate floor: the same decisions (every candidate is verified either way,
    # checked below) under another audit key.
    same = replace(DEFAULT_POINT, verify_cosine=DEFAULT_POINT.candidate_cosine - 0.1)
    hits = []
    for name, key, point in (
        ("re-audit", "re_audit", DEFAULT_POINT),
        ("re-audit, features stored", "re_audit_stored", same),
    ):
        again = step(name, lambda p=point: audit(catalog, ["big"], point=p))
        hits.append(_hits(catalog))
        verified, right, wrong = _scored(catalog, truth)
        out[key] = {
            "images": again.images,
            "per_s": again.images / seconds[name],
            "vs_target": again.images / seconds[name] / RE_AUDIT_TARGET,
            "timings": again.timings,
            "share_verified": verified / max(again.images, 1),
            "copies_found": len(right),
            "images_with_false_hits": len(wrong),
        }
    if hits[0] != hits[1]:
        sys.exit("the two re-audits disagree: the benchmark's premise is broken")
    with_floor = {}
    for floor in floors:
        point = replace(DEFAULT_POINT, verify_cosine=floor)
        name = f"re-audit --verify-above {floor}"
        floored = step(name, lambda p=point: audit(catalog, ["big"], point=p))
        share, found, false = _scored(catalog, truth)
        with_floor[str(floor)] = {
            "re_audit_per_s": floored.images / seconds[name],
            "share_verified": share / max(floored.images, 1),
            "copies_found": len(found),
            "images_with_false_hits": len(false),
        }
    return out | {"with_verification_floor": with_floor, "seconds": seconds}


def _hits(catalog) -> set:  # type: ignore[no-untyped-def]
    """The (image, reference) pairs of the last audit of ``big``'s hits."""
    rows = catalog.sql("SELECT id, ref_id FROM contamination WHERE refset = 'big'").to_pylist()
    return {(r["id"], r["ref_id"]) for r in rows}


def _scored(catalog, truth: dict) -> tuple[int, set, set]:  # type: ignore[no-untyped-def]
    """(images verified, copies found on their reference, images with a false hit) of the
    last audit of ``big``."""
    verified = catalog.sql(
        "SELECT count(DISTINCT id) AS n FROM contamination_candidates "
        "WHERE refset = 'big' AND inliers IS NOT NULL"
    )["n"][0].as_py()
    hits = catalog.sql(
        "SELECT i.member, c.ref_path FROM contamination c JOIN images i USING (id) "
        "WHERE c.refset = 'big'"
    ).to_pylist()
    right = {h["member"] for h in hits if truth.get(Path(h["member"]).stem) == h["ref_path"]}
    return verified, right, {h["member"] for h in hits if h["member"] not in right}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument(
        "--verify-above",
        type=float,
        nargs="*",
        default=[0.5],
        help="Re-audit again at these verification floors (audit --verify-above).",
    )
    parser.add_argument(
        "--audits-only",
        action="store_true",
        help="Only the re-audits, on the catalog a full run left in bench/out/audit-scale-home.",
    )
    args = parser.parse_args()
    result = run(args.refs, args.images, args.copies, args.verify_above, args.audits_only)
    save(f"audit_scale_{args.refs}{'_audits' if args.audits_only else ''}", result)
    if "refset_add_per_s" in result:
        print(
            f"refset add {result['refset_add_per_s']:.1f} refs/s vs describing "
            f"{result['first_audit_described_per_s']:.1f} images/s "
            f"(x{result['refset_add_vs_describe']:.2f})",
            file=sys.stderr,
        )
    for key, label in (("re_audit", "re-audit"), ("re_audit_stored", "re-audit, features stored")):
        row = result[key]
        print(
            f"{label} at {result['references']} references: {row['per_s']:.1f} images/s "
            f"(x{row['vs_target']:.3f} of {RE_AUDIT_TARGET:.0f}), "
            f"{100 * row['share_verified']:.1f}% verified; copies found "
            f"{row['copies_found']}/{result['planted_copies']}, "
            f"images with false hits {row['images_with_false_hits']}",
            file=sys.stderr,
        )
    for floor, row in result["with_verification_floor"].items():
        print(
            f"--verify-above {floor}: {row['re_audit_per_s']:.1f} images/s, "
            f"{100 * row['share_verified']:.1f}% verified, copies found "
            f"{row['copies_found']}/{result['planted_copies']}, images with false hits "
            f"{row['images_with_false_hits']}",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
