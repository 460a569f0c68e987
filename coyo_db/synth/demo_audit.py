"""The contamination part of `coyo-db demo`: a small reference set, planted copies of it in an
extra shard of dataset images, the audit, a removal list and the HTML report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

REFSET = "demo-eval"
REFERENCES = 12
KINDS = ("resize_jpeg", "crop", "flip", "jpeg_low", "text", "border")


@dataclass
class AuditDemoResult:
    references: int = 0
    planted: int = 0
    unrelated: int = 0
    found: int = 0  # planted copies with a hit on their own reference
    false_hits: int = 0  # hits on unrelated images or on the wrong reference
    contaminated: int = 0  # distinct ids in `contamination`
    report: str = ""
    removal_list: str = ""


def _copy(image, kind: str, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw, ImageOps

    w, h = image.size
    if kind == "resize_jpeg":
        return image.resize((w // 2, h // 2)), 60
    if kind == "crop":
        return image.crop((w // 10, h // 8, w - w // 10, h - h // 10)), 85
    if kind == "flip":
        return ImageOps.mirror(image), 85
    if kind == "jpeg_low":
        return image, 15
    if kind == "text":
        out = image.copy()
        ImageDraw.Draw(out).text((w // 8, h // 3), "SALE 50% OFF", fill=(255, 255, 0))
        return out, 85
    side = int(max(w, h) * 1.2)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas, 85


def run_audit_demo(
    catalog: Catalog, data: Path, *, seed: int = 0, emit: Callable[[str], None]
) -> AuditDemoResult:
    from coyo_db.audit.contamination import audit
    from coyo_db.audit.refset_job import add_refset
    from coyo_db.audit.removal import write_removal_list
    from coyo_db.audit.report import write_report
    from coyo_db.ingest.images import ingest_images
    from coyo_db.synth.images import jpeg_bytes, write_id_shard
    from coyo_db.synth.images import picture as draw_picture

    rng = np.random.default_rng(seed + 7)
    refs_dir = data / "audit" / "reference-set"
    refs_dir.mkdir(parents=True, exist_ok=True)
    pictures = []
    for i in range(REFERENCES):
        picture = draw_picture(rng, int(rng.integers(320, 480)), int(rng.integers(320, 480)))
        picture.save(refs_dir / f"eval-{i:03d}.jpg", quality=92)
        pictures.append(picture)
    # The planted images stand for pairs rows whose images were not downloaded yet, so that the
    # export step shows contaminated ids left out.
    free = catalog.sql(
        "SELECT id FROM pairs WHERE id NOT IN (SELECT id FROM images) ORDER BY id LIMIT 100"
    )["id"].to_pylist()
    planted: dict[str, str] = {}
    samples = []
    for i, kind in enumerate(KINDS):
        image, quality = _copy(pictures[i], kind, rng)
        key = f"planted-{i:03d}-{kind}"
        samples.append((key, jpeg_bytes(image, quality), free[i]))
        planted[key] = f"eval-{i:03d}.jpg"
    unrelated = 6
    for j in range(unrelated):
        image = draw_picture(rng, int(rng.integers(320, 480)), int(rng.integers(320, 480)))
        samples.append((f"unrelated-{j:03d}", jpeg_bytes(image, 90), free[len(KINDS) + j]))
    shard = data / "audit" / "planted.tar"
    write_id_shard(shard, samples)

    summary = add_refset(catalog, REFSET, refs_dir, workers=0)
    emit(summary.line())
    ingest = ingest_images(catalog, [shard], workers=0)
    emit(
        f"planted {len(planted)} copies of reference images ({', '.join(KINDS)}) and "
        f"{unrelated} unrelated images in an extra shard: {ingest.line()}"
    )
    result = audit(catalog, [REFSET], workers=0)
    emit(result.line())

    hits = catalog.sql(
        "SELECT i.key, c.ref_path FROM contamination c JOIN images i USING (id) "
        f"WHERE c.refset = '{REFSET}'"
    ).to_pylist()
    found = {h["key"] for h in hits if planted.get(h["key"]) == h["ref_path"]}
    false_hits = sum(1 for h in hits if planted.get(h["key"]) != h["ref_path"])
    out = AuditDemoResult(REFERENCES, len(planted), unrelated, len(found), false_hits)
    out.contaminated = result.contaminated
    removal = data / "audit" / "removal-list.parquet"
    write_removal_list(catalog, removal)
    out.removal_list = str(removal)
    out.report = str(write_report(catalog, data / "audit" / "report", refsets=[REFSET]))
    emit(
        f"audit found {out.found}/{out.planted} planted copies, {out.false_hits} false hits; "
        f"removal list {removal}; report {out.report}"
    )
    return out
