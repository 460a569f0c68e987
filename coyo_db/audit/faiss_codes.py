"""FAISS for the audit: the module, loaded on first use, and pHashes as binary codes."""

from __future__ import annotations

from typing import Any

import numpy as np


def faiss() -> Any:
    from coyo_db.ingest.models.common import require

    return require("faiss", "faiss-cpu", "index")


def phash_bytes(hashes: np.ndarray) -> np.ndarray:
    """uint64 pHashes as FAISS binary codes (8 bytes each, big-endian: bit order is irrelevant
    to Hamming distance as long as both sides agree)."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)
