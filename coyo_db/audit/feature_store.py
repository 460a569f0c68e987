"""Reference local features kept on disk: computed by the first audit that verifies a pair
against a reference, read by every later one.

Verifying a pair needs the reference's RootSIFT features (and those of its mirror image).
Computing them means reading the reference from its shard, decoding it and running SIFT:
about as much work as the dataset image's side, again for every audit, and, against a large
set, again within one audit once the in-memory cache has dropped it. They are kept per
reference set *registration* (a set added again with ``refset add --replace`` starts afresh)
in the catalog's local folder, ``<home>/reference-features/<key>/``, one file per reference
and orientation (``<ref_id>-p.npz``, ``<ref_id>-m.npz``): keypoint coordinates as float32,
SIFT descriptors as uint8 (OpenCV's SIFT values are whole numbers 0-255, so the bytes are
exact and a stored reference verifies exactly as a fresh one), the image size. About 200 KB
per reference and orientation at 1,500 features.

A file is written to a temporary name and renamed, so a killed audit leaves whole files or
none, and two audits writing the same reference write the same bytes. A file that does not
read back (damaged, from another version) counts as missing and is computed again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

#: part of every folder key: parameters that change the features start a new folder
FEATURES_VERSION = "sift-v1"
FOLDER = "reference-features"


def registration_key(refset: str, created_at: object, parameters: str) -> str:
    """The folder name of one registration of a set (a hash: set names are user strings)."""
    text = f"{FEATURES_VERSION}\0{parameters}\0{refset}\0{created_at}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class FeatureStore:
    """Raw SIFT features of references by (set registration key, ref_id, flipped)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str, ref_id: int, flipped: bool) -> Path:
        return self.root / key / f"{int(ref_id)}-{'m' if flipped else 'p'}.npz"

    def has(self, key: str, ref_id: int, flipped: bool) -> bool:
        return self.path(key, ref_id, flipped).is_file()

    def load(
        self, key: str, ref_id: int, flipped: bool
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """(points (N, 2) float32, SIFT (N, 128) uint8, (width, height)), or None when the
        file is missing or does not read back."""
        path = self.path(key, ref_id, flipped)
        try:
            with np.load(path, allow_pickle=False) as data:
                points = np.asarray(data["points"], dtype=np.float32)
                sift = np.asarray(data["sift"])
                size = tuple(int(v) for v in data["size"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
            return None
        if (
            sift.dtype != np.uint8
            or sift.ndim != 2
            or sift.shape[1] != 128
            or points.shape != (len(sift), 2)
            or len(size) != 2
        ):
            return None
        return points, sift, (size[0], size[1])

    def save(
        self,
        key: str,
        ref_id: int,
        flipped: bool,
        points: np.ndarray,
        sift: np.ndarray,
        size: tuple[int, int],
    ) -> None:
        """Write one reference's features (whole or not at all); a store that cannot be
        written (read-only home, full disk) is skipped: the features are recomputed next time."""
        path = self.path(key, ref_id, flipped)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    np.savez(
                        out,
                        points=np.asarray(points, np.float32),
                        sift=np.asarray(sift, np.uint8),
                        size=np.asarray(size, np.int32),
                    )
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return
