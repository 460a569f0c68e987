"""Reference local features kept on disk: computed by the first audit that verifies a pair
against a reference, read by every later one.

Verifying a pair needs the reference's RootSIFT features (and those of its mirror image).
Computing them means reading the reference from its shard, decoding it and running SIFT:
about as much work as the dataset image's side, again for every audit, and, against a large
set, again within one audit once the in-memory cache has dropped it. They are kept per
reference set *registration* (a set added again with ``refset add --replace`` starts afresh)
in the catalog's local folder, ``<home>/reference-features/<key>/``, one file per reference
and orientation (``<ref_id>-p.sift``, ``<ref_id>-m.sift``): a header (magic, version, count,
width, height), the keypoint coordinates as float32 and the SIFT descriptors as uint8
(OpenCV's SIFT values are whole numbers 0-255, so the bytes are exact and a stored reference
verifies exactly as a fresh one), read in one call (an audit reads one per candidate pair).
About 200 KB per reference and orientation at 1,500 features. A plain reference's colour layout
(:mod:`coyo_db.audit.layout`, compared with each of its candidates) is kept beside them,
``<ref_id>-l.bin`` (12 KB), so that a later audit does not read the reference again.

A file is written to a temporary name and renamed, so a killed audit leaves whole files or
none, and two audits writing the same reference write the same bytes. A file that does not
read back (damaged, from another version) counts as missing and is computed again. Folders
of registrations that are gone (a set removed or replaced, an older feature version) are
deleted when an audit opens the store (:meth:`FeatureStore.prune`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

#: part of every folder key: parameters that change the features start a new folder
FEATURES_VERSION = "sift-v2"
FOLDER = "reference-features"

_MAGIC = b"CSFT"
_VERSION = 1
_HEADER = struct.Struct("<4sBxxxIII")  # magic, version, keypoints, width, height


def registration_key(refset: str, created_at: object, parameters: str) -> str:
    """The folder name of one registration of a set (a hash: set names are user strings)."""
    text = f"{FEATURES_VERSION}\0{parameters}\0{refset}\0{created_at}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class FeatureStore:
    """Raw SIFT features of references by (set registration key, ref_id, flipped)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str, ref_id: int, flipped: bool) -> Path:
        return self.root / key / f"{int(ref_id)}-{'m' if flipped else 'p'}.sift"

    def has(self, key: str, ref_id: int, flipped: bool) -> bool:
        return self.path(key, ref_id, flipped).is_file()

    def load(
        self, key: str, ref_id: int, flipped: bool
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """(points (N, 2) float32, SIFT (N, 128) uint8, (width, height)), or None when the
        file is missing or does not read back."""
        try:
            data = self.path(key, ref_id, flipped).read_bytes()
        except OSError:
            return None
        if len(data) < _HEADER.size:
            return None
        magic, version, n, width, height = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or len(data) != _HEADER.size + n * (8 + 128):
            return None
        points = np.frombuffer(data, np.float32, n * 2, _HEADER.size).reshape(n, 2)
        sift = np.frombuffer(data, np.uint8, n * 128, _HEADER.size + n * 8).reshape(n, 128)
        return points, sift, (int(width), int(height))

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
        points = np.ascontiguousarray(points, np.float32).reshape(-1, 2)
        sift = np.ascontiguousarray(sift, np.uint8).reshape(-1, 128)
        if len(points) != len(sift):
            raise ValueError(f"{len(points)} keypoints but {len(sift)} descriptors")
        header = _HEADER.pack(_MAGIC, _VERSION, len(sift), int(size[0]), int(size[1]))
        data = header + points.tobytes() + sift.tobytes()
        _write_whole(self.path(key, ref_id, flipped), data)

    def layout_path(self, key: str, ref_id: int) -> Path:
        return self.root / key / f"{int(ref_id)}-l.bin"

    def load_layout(self, key: str, ref_id: int) -> bytes | None:
        """A reference's stored colour layout (as ``Layout.to_bytes`` wrote it), or None."""
        try:
            return self.layout_path(key, ref_id).read_bytes()
        except OSError:
            return None

    def save_layout(self, key: str, ref_id: int, data: bytes) -> None:
        """Keep a reference's colour layout (whole or not at all; skipped when the store
        cannot be written)."""
        _write_whole(self.layout_path(key, ref_id), data)

    def prune(self, keep: Iterable[str]) -> None:
        """Delete the folders of registrations not in `keep` (sets removed or replaced,
        features of an older version); what cannot be deleted stays."""
        wanted = set(keep)
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir() and p.name not in wanted]
        except OSError:
            return
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _write_whole(path: Path, data: bytes) -> None:
    """`data` to `path` through a temporary file and a rename; an OSError (read-only home,
    full disk) skips it: the value is computed again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return
