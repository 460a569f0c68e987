"""The references an audit matches against: every image of the audited sets, concatenated,
with a FAISS index of their descriptors (plain and mirrored) and one of their pHashes.

CNN descriptors share a large common component (unrelated photos score cosine 0.6-0.9);
removing a mean spreads them out, so one threshold separates copies from unrelated images far
better. The mean is that of the references and of the first batch of dataset images
(:meth:`References.build_index`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

log = logging.getLogger(__name__)


@dataclass
class References:
    """Every reference of the audited sets, concatenated, with its indexes."""

    refset: np.ndarray  # (N,) object
    ref_id: np.ndarray  # (N,) int64
    ref_path: np.ndarray  # (N,) object
    shard: list[str]
    member: list[str]
    phash: np.ndarray  # (N,) uint64
    low_info: np.ndarray  # (N,) bool
    index: Any = None  # faiss IndexFlatIP over 2N centred vectors: plain then mirrored
    binary: Any = None  # faiss IndexBinaryFlat over the N pHashes
    features: Any = None  # verify.ReferenceFeatures
    raw: Any = None  # (2N, D) descriptors as stored, before centring
    center: Any = None  # (D,) the mean removed from every descriptor (see build_index)

    def build_index(self, first_queries: np.ndarray) -> None:
        """Centre on the mean of the references and the first dataset batch, then index."""
        self.center = np.concatenate([self.raw, first_queries]).mean(axis=0).astype(np.float32)
        index = faiss().IndexFlatIP(self.raw.shape[1])
        index.add(self.centre(self.raw))
        self.index = index

    def centre(self, vectors: np.ndarray) -> np.ndarray:
        out = np.asarray(vectors, dtype=np.float32) - self.center
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ref_id)


def load_references(
    catalog: Catalog, names: Sequence[str], descriptor: CopyDescriptor, workers: int | None = None
) -> References:
    """The audited sets' references and their descriptors (computed now where a set has none
    for `descriptor` yet), with the pHash index built."""
    from coyo_db.audit import refsets
    from coyo_db.audit.refset_job import describe_refset
    from coyo_db.audit.verify import ReferenceFeatures

    parts, vectors = [], []
    for name in dict.fromkeys(names):
        images, both = refsets.load_refset(catalog, name, descriptor.name)
        if both.size == 0:
            log.info("describing refset %s with %s", name, descriptor.name)
            both = describe_refset(catalog, name, descriptor, workers=workers)
        parts.append(images)
        vectors.append(both)
    table = pa.concat_tables(parts)
    n = len(table)
    plain = np.concatenate([v[: len(v) // 2] for v in vectors])
    mirror = np.concatenate([v[len(v) // 2 :] for v in vectors])
    refs = References(
        refset=np.asarray(table["refset"].to_pylist(), dtype=object),
        ref_id=table["ref_id"].to_numpy(),
        ref_path=np.asarray(table["ref_path"].to_pylist(), dtype=object),
        shard=table["shard"].to_pylist(),
        member=table["member"].to_pylist(),
        phash=table["phash"].to_numpy().astype(np.uint64),
        low_info=table["low_info"].to_numpy(zero_copy_only=False).astype(bool),
    )
    refs.raw = np.concatenate([plain, mirror])
    binary = faiss().IndexBinaryFlat(64)
    binary.add(phash_bytes(refs.phash))
    refs.binary = binary
    refs.features = ReferenceFeatures()
    log.info("audit index: %d references (%d low-information)", n, int(refs.low_info.sum()))
    return refs


def faiss() -> Any:
    from coyo_db.ingest.models.common import require

    return require("faiss", "faiss-cpu", "index")


def phash_bytes(hashes: np.ndarray) -> np.ndarray:
    """uint64 pHashes as FAISS binary codes (8 bytes each, big-endian: bit order is irrelevant
    to Hamming distance as long as both sides agree)."""
    return np.ascontiguousarray(hashes.astype(">u8")).view(np.uint8).reshape(-1, 8)


def reference_greys(refs: References, wanted: Sequence[int]) -> dict[int, np.ndarray | None]:
    """The references a batch must verify against whose features are not cached, read again
    from their shards as grey images (kept for this batch only: 50,000 would not fit)."""
    from coyo_db.audit.verify import grey_image
    from coyo_db.ingest.image_fetch import fetch_images

    missing = [
        i
        for i in dict.fromkeys(wanted)
        if (i, False) not in refs.features or (i, True) not in refs.features
    ]
    greys: dict[int, np.ndarray | None] = {}
    for fetched in fetch_images([(refs.shard[i], refs.member[i]) for i in missing]):
        i = missing[fetched.index]
        greys[i] = grey_image(fetched.data) if fetched.data else None
    return greys
