"""The references an audit matches against: every image of the audited sets, concatenated,
with one FAISS index of descriptors per set (plain and mirrored) and one of all their pHashes.

Each set's descriptors are centred on that set's own centre (:mod:`coyo_db.audit.centres`),
and a dataset image is centred on it too before it is compared with the set: a set's hits
depend on that set and the image only, not on the other sets audited with it, nor on the
dataset images seen before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.audit.faiss_codes import faiss, phash_bytes
from coyo_db.audit.low_info import BLANK_REASON
from coyo_db.lru import Lru

if TYPE_CHECKING:
    from collections.abc import Callable

    from coyo_db.audit.feature_store import FeatureStore
    from coyo_db.catalog import Catalog
    from coyo_db.ingest.models.copy_descriptors import CopyDescriptor

log = logging.getLogger(__name__)

LAYOUT_CACHE = 20_000  # reference colour layouts kept (a few KB each)
_MISSING = object()


@dataclass
class RefsetIndex:
    """One set's rows ``start:stop`` of :class:`References`, its centre and its index."""

    name: str
    start: int
    stop: int
    centre: np.ndarray  # (D,) float32
    index: Any  # faiss IndexFlatIP over the set's n centred descriptors, in ref_id order

    def __len__(self) -> int:
        return self.stop - self.start

    def centred(self, vectors: np.ndarray) -> np.ndarray:
        """`vectors` minus the set's centre, L2-normalised, float32 contiguous."""
        out = np.asarray(vectors, dtype=np.float32) - self.centre
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)


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
    blank: np.ndarray  # (N,) bool: an empty frame, a copy of it is no evidence of anything
    ref_group: np.ndarray  # (N,) int64: the group of near-identical references it belongs to
    sets: list[RefsetIndex] = field(default_factory=list)
    binary: Any = None  # faiss IndexBinaryFlat over the N pHashes
    features: Any = None  # verify.ReferenceFeatures
    layouts: ReferenceLayouts = field(default_factory=lambda: ReferenceLayouts())

    def __len__(self) -> int:
        return len(self.ref_id)


def load_references(
    catalog: Catalog, names: Sequence[str], descriptor: CopyDescriptor, workers: int | None = None
) -> References:
    """The audited sets' references and their indexes; a set without descriptors of
    `descriptor` yet is described now (and they are stored)."""
    from coyo_db.audit import refsets
    from coyo_db.audit.centres import background_mean, refset_centre
    from coyo_db.audit.refset_job import describe_refset

    background = background_mean(descriptor)
    parts, sets, start = [], [], 0
    for name in dict.fromkeys(names):
        images, vectors = refsets.load_refset(catalog, name, descriptor.name)
        if vectors.size == 0:
            log.info("describing refset %s with %s", name, descriptor.name)
            vectors = describe_refset(catalog, name, descriptor, workers=workers)
        centre = refset_centre(vectors, background)
        index = faiss().IndexFlatIP(vectors.shape[1])
        stop = start + len(images)
        entry = RefsetIndex(name, start, stop, centre, index)
        index.add(entry.centred(vectors))
        parts.append(images)
        sets.append(entry)
        start = stop
    table = pa.concat_tables(parts)
    ref_id = table["ref_id"].to_numpy()
    group = (
        pc.fill_null(table["ref_group"], table["ref_id"])
        if "ref_group" in table.schema.names
        else table["ref_id"]
    )
    reasons = table["low_info_reason"].to_pylist()
    refs = References(
        refset=np.asarray(table["refset"].to_pylist(), dtype=object),
        ref_id=ref_id,
        ref_path=np.asarray(table["ref_path"].to_pylist(), dtype=object),
        shard=table["shard"].to_pylist(),
        member=table["member"].to_pylist(),
        phash=table["phash"].to_numpy().astype(np.uint64),
        low_info=table["low_info"].to_numpy(zero_copy_only=False).astype(bool),
        blank=np.array([r == BLANK_REASON for r in reasons], dtype=bool),
        ref_group=np.asarray(group, dtype=np.int64),
        sets=sets,
    )
    binary = faiss().IndexBinaryFlat(64)
    binary.add(phash_bytes(refs.phash))
    refs.binary = binary
    refs.features = reference_features(catalog, refs)
    refs.layouts = ReferenceLayouts(store=refs.features.store, names=refs.features.names)
    log.info("audit index: %d references (%d low-information)", len(refs), int(refs.low_info.sum()))
    return refs


def reference_features(catalog: Catalog, refs: References) -> Any:
    """The references' feature cache, backed by the catalog's feature store: each set's files
    under the key of its current registration."""
    from coyo_db.audit import verify
    from coyo_db.audit.feature_store import FOLDER, FeatureStore, registration_key
    from coyo_db.catalog import tables

    registered = catalog.dataset(tables.REFSETS.name).to_table(columns=["refset", "created_at"])
    parameters = f"{verify.MAX_SIDE},{verify.MIN_SIDE},{verify.N_FEATURES},{verify.CLAHE_CLIP}"
    keys = {
        row["refset"]: registration_key(row["refset"], row["created_at"], parameters)
        for row in registered.to_pylist()
    }

    def name(ri: object) -> tuple[str, int]:
        i = int(ri)  # type: ignore[call-overload]
        return keys[refs.refset[i]], int(refs.ref_id[i])

    store = FeatureStore(catalog.home / FOLDER)
    store.prune(keys.values())
    return verify.ReferenceFeatures(store=store, names=name)


class ReferenceLayouts:
    """Colour layouts of references (:mod:`coyo_db.audit.layout`), computed once: the last
    `capacity` kept in memory and, with a `store`, every one on disk for later audits, `names`
    giving each reference's (registration key, ref_id) there (as for
    :class:`coyo_db.audit.verify.ReferenceFeatures`)."""

    def __init__(
        self,
        capacity: int = LAYOUT_CACHE,
        store: FeatureStore | None = None,
        names: Callable[[object], tuple[str, int]] | None = None,
    ) -> None:
        self.store, self.names = store, names
        self._cache = Lru(capacity)  # layout.Layout, or None: the image does not decode

    def __contains__(self, ri: int) -> bool:
        """Whether reference `ri`'s layout is available without its image."""
        if ri in self._cache:
            return True
        if self.store is None or self.names is None:
            return False
        return self.store.layout_path(*self.names(ri)).is_file()

    def get(self, ri: int, data: Callable[[], bytes | None]) -> Any:
        """Reference `ri`'s layout (None: its image does not decode); `data()` gives its
        encoded image, called only when the layout is neither in memory nor stored."""
        from coyo_db.audit.layout import Layout, layout_of

        cached = self._cache.get(ri, _MISSING)
        if cached is not _MISSING:
            return cached
        name = self.names(ri) if self.store is not None and self.names is not None else None
        value = None
        stored = self.store.load_layout(*name) if name is not None else None
        if stored is not None:
            try:
                value = Layout.from_bytes(stored)
            except ValueError:  # damaged or from another version: computed again
                stored = None
        if stored is None:
            encoded = data()
            value = layout_of(encoded) if encoded else None
            if value is not None and name is not None:
                self.store.save_layout(*name, value.to_bytes())
        self._cache.put(ri, value)
        return value


class ReferenceImages:
    """The encoded images of the references a batch verifies against, read again from their
    shards (kept for this batch only: 50,000 would not fit), with their grey image and colour
    layout computed on demand (layouts kept by :attr:`References.layouts`)."""

    def __init__(self, refs: References, data: dict[int, bytes | None]) -> None:
        self.refs, self.data = refs, data

    def grey(self, ri: int) -> np.ndarray | None:
        from coyo_db.audit.verify import grey_image

        return grey_image(data) if (data := self._data(ri)) else None

    def _data(self, ri: int) -> bytes | None:
        """The reference's encoded image, read now if the batch's pass did not (a stored
        feature file that no longer reads back)."""
        if ri not in self.data:
            self.data.update(_fetch(self.refs, [ri]))
        return self.data.get(ri)

    def layout(self, ri: int) -> Any:
        return self.refs.layouts.get(ri, lambda: self._data(ri))


def reference_images(refs: References, wanted: Sequence[int]) -> ReferenceImages:
    """The references among `wanted` whose local features are neither cached nor stored, or
    that are low-information with no layout cached or stored (their layout will be compared),
    read again in one pass over their shards."""
    missing = [
        i
        for i in wanted
        if (i, False) not in refs.features
        or (i, True) not in refs.features
        or (refs.low_info[i] and i not in refs.layouts)
    ]
    return ReferenceImages(refs, _fetch(refs, missing))


def _fetch(refs: References, wanted: Sequence[int]) -> dict[int, bytes | None]:
    from coyo_db.ingest.image_fetch import fetch_images

    out: dict[int, bytes | None] = {}
    for fetched in fetch_images([(refs.shard[i], refs.member[i]) for i in wanted]):
        out[wanted[fetched.index]] = fetched.data or None
    return out
