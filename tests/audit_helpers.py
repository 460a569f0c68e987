"""A tiny contamination setup shared by the audit tests: real photos, planted copies, a blank.

References are scikit-image photos (small, so tests stay fast); the dataset folder holds a
resized JPEG copy, a mirrored copy and a crop of three of them, two unrelated photos and a
near-blank image (which must not match the blank reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

REFERENCES = ("astronaut", "coffee", "chelsea", "rocket")
UNRELATED = ("camera", "coins")


def _photo(name: str, side: int = 256) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    img = Image.fromarray(pixels).convert("RGB")
    img.thumbnail((side, side))
    return img


def write_references(folder: Path) -> dict[str, Image.Image]:
    folder.mkdir(parents=True, exist_ok=True)
    photos = {name: _photo(name) for name in REFERENCES}
    for name, img in photos.items():
        img.save(folder / f"{name}.jpg", quality=95)
    Image.new("RGB", (200, 200), (250, 250, 250)).save(folder / "blank.png")
    return photos


def write_dataset(folder: Path, photos: dict[str, Image.Image]) -> dict[str, str]:
    """Write the dataset images; returns {file name: reference file name or ''}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    small = photos["astronaut"].resize((150, 150))
    small.save(folder / "copy-resize.jpg", quality=50)
    truth["copy-resize.jpg"] = "astronaut.jpg"
    ImageOps.mirror(photos["coffee"]).save(folder / "copy-flip.jpg", quality=85)
    truth["copy-flip.jpg"] = "coffee.jpg"
    w, h = photos["chelsea"].size
    photos["chelsea"].crop((int(w * 0.1), int(h * 0.15), int(w * 0.9), int(h * 0.95))).save(
        folder / "copy-crop.jpg", quality=85
    )
    truth["copy-crop.jpg"] = "chelsea.jpg"
    for name in UNRELATED:
        _photo(name).save(folder / f"{name}.jpg", quality=90)
        truth[f"{name}.jpg"] = ""
    rng = np.random.default_rng(0)
    near_blank = np.full((180, 180, 3), 246, dtype=np.int16) + rng.integers(-2, 3, (180, 180, 3))
    Image.fromarray(near_blank.astype(np.uint8)).save(folder / "near-blank.jpg", quality=90)
    truth["near-blank.jpg"] = ""
    return truth


@pytest.fixture(scope="session")
def audited(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(catalog, truth): the tiny setup registered as refset `mini`, ingested and audited once
    per test session (the audit and report tests share it)."""
    from coyo_db.audit.contamination import audit
    from coyo_db.audit.refset_job import add_refset
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.images import ingest_images

    root = tmp_path_factory.mktemp("audit")
    photos = write_references(root / "refs")
    truth = write_dataset(root / "data", photos)
    catalog = Catalog(root / "home", create=True)
    add_refset(catalog, "mini", root / "refs", workers=0)
    ingest_images(catalog, [root / "data"], workers=0)
    audit(catalog, ["mini"], workers=0)
    return catalog, truth
