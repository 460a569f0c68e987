"""Ids as keys: which of a batch's ids a table holds already, in time near-linear in the batch.

`pairs`, `labels` and `images` hold each id once, so ingest asks, for every batch it is about
to commit, which of its ids the table already holds (:meth:`IdKeys.present`), and quarantines
those rows as ``duplicate id`` instead of writing them twice. A scan of the table's ids per
file would make ingest quadratic over a 747M-row table; instead the check has two stages:

1. a Bloom filter of every id the table holds, kept in ``<home>/keys/<table>.bloom`` (20 to
   40 bits per id, as it doubles when full; 2-4 GB at 747M ids): "certainly absent" for almost
   every new id, at a fraction of a microsecond per id whatever the table's size;
2. the few ids it calls "maybe present" (true duplicates and about 1 in 1,000 false
   positives) are looked up exactly in the table, through a BTREE index on ``id`` that
   :meth:`IdKeys.committed` extends with a delta index over the new rows only, once they are
   :data:`INDEX_TAIL_ROWS` or more (deltas are merged when there are many); the rows not yet
   indexed are scanned. Ingest settles its candidates together, one lookup per file or per
   batch of candidates.

Neither stage can cause a wrong answer: ids are added to the filter *before* their rows are
committed, so a crash leaves extra bits (more candidates, each checked exactly), never missing
ones; rows committed after the filter was last saved (a killed run) are folded in when it is
next opened, from the fragments it does not cover. The exact lookup reads the table itself, so
an index that is missing or behind only makes it slower.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.id_lookup import mix64

if TYPE_CHECKING:
    import lance

    from coyo_db.catalog import Catalog

log = logging.getLogger(__name__)

BITS_PER_ID = 20
HASHES = 6  # bits set per id, all in one 64-bit word
MIN_CAPACITY = 1 << 20
MAX_DELTA_INDICES = 16
# rows left out of the id index before it is extended over them (their lookups scan them)
INDEX_TAIL_ROWS = 16 * 1024 * 1024
_KEYS_DIR = "keys"
_FORMAT = 1


class BloomFilter:
    """A register-blocked Bloom filter over int64 ids, vectorised with NumPy.

    Each id sets :data:`HASHES` bits of one 64-bit word, so a test or an insert costs one
    random memory access, not one per bit; the price is a higher false-positive rate than a
    classic filter of the same size (about 1e-3 at 20 bits per id), which the exact lookup
    behind it absorbs.
    """

    def __init__(self, capacity: int, words: np.ndarray | None = None, count: int = 0) -> None:
        self.capacity = capacity
        self.words = np.zeros(words_for(capacity), np.uint64) if words is None else words
        self.count = count

    def _hash(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each id's word (the hash's top bits) and its mask (6-bit fields of the low bits)."""
        h = mix64(np.ascontiguousarray(ids, np.int64).view(np.uint64))
        # the top 32 bits, scaled to the number of words (Lemire's multiply-shift reduction)
        scaled = (h >> np.uint64(32)) * np.uint64(len(self.words))
        word = (scaled >> np.uint64(32)).astype(np.intp)
        mask = np.zeros(len(h), np.uint64)
        for field in range(HASHES):
            mask |= np.uint64(1) << ((h >> np.uint64(6 * field)) & np.uint64(63))
        return word, mask

    def maybe(self, ids: np.ndarray) -> np.ndarray:
        """True where an id may have been added; False where it certainly was not."""
        word, mask = self._hash(ids)
        return (self.words[word] & mask) == mask

    def add(self, ids: np.ndarray) -> None:
        word, mask = self._hash(ids)
        self.count += len(word)
        self._set(word, mask)

    def _set(self, word: np.ndarray, mask: np.ndarray) -> None:
        # A scatter keeps one write per word; ids that shared a word with another id of this
        # call go round again until every bit is in (twice as fast as np.bitwise_or.at).
        while len(word):
            self.words[word] |= mask
            missing = (self.words[word] & mask) != mask
            word, mask = word[missing], mask[missing]

    def add_absent(self, ids: np.ndarray) -> np.ndarray:
        """Add the ids the filter rules out; True where an id may be in already (not added).
        One hash and one read of the words for both (:meth:`maybe` then :meth:`add` cost two).
        The ids of one call are tested against the filter as it was: pass distinct ids."""
        word, mask = self._hash(ids)
        maybe = (self.words[word] & mask) == mask
        new = ~maybe
        self.count += int(new.sum())
        self._set(word[new], mask[new])
        return maybe


def words_for(capacity: int) -> int:
    """How many 64-bit words a filter for `capacity` ids takes."""
    return max(1, -(-capacity * BITS_PER_ID // 64))


class IdKeys:
    """The ids a table holds, for one writer at a time (the catalog's writer lock).

    >>> keys = IdKeys(catalog, "pairs")            # doctest: +SKIP
    >>> dup = keys.present(ids); keys.add(ids[~dup])  # before the rows' commit
    >>> ...commit...; keys.committed()             # after it
    >>> keys.close()                               # saves the filter
    """

    def __init__(self, catalog: Catalog, table: str, scope: tuple[str, str] | None = None) -> None:
        self.catalog = catalog
        self.table = table
        #: (column, value): the keys of the rows where column = value only (`scores` holds an
        #: id once per scorer)
        self.scope = scope
        #: ids added since the last commit: a rebuilt filter reads the table, which lacks them
        self._pending: list[np.ndarray] = []
        self._indexing: threading.Thread | None = None  # see committed(wait=False)
        self._index_error: BaseException | None = None
        name = table if scope is None else f"{table}.{scope[0]}.{_slug(scope[1])}"
        self.path = catalog.home / _KEYS_DIR / f"{name}.bloom"
        self.bloom, covered = self._load()
        self._fold_in(covered)

    # ---- the check ----------------------------------------------------------------------

    def present(self, ids: np.ndarray) -> np.ndarray:
        """True for each id the table already holds (exact)."""
        ids = np.asarray(ids, np.int64)
        maybe = self.bloom.maybe(ids)
        found = np.zeros(len(ids), bool)
        if maybe.any():
            candidates = np.unique(ids[maybe])
            held = self._lookup(candidates)
            found[maybe] = np.isin(ids[maybe], held)
        return found

    def add_absent(self, ids: np.ndarray) -> np.ndarray:
        """Record the ids the filter rules out as present (they are certainly new: call before
        their commit, like :meth:`add`); True for the others, which :meth:`present` must
        settle. A caller may hold those back and settle many at once: one exact lookup
        instead of one per batch. `ids` must be distinct."""
        ids = np.asarray(ids, np.int64)
        if self.bloom.count + len(ids) > self.bloom.capacity:
            self._grow(self.bloom.count + len(ids))
        maybe = self.bloom.add_absent(ids)
        self._pending.append(ids[~maybe])
        return maybe

    def add(self, ids: np.ndarray) -> None:
        """Record ids about to be committed (call before the commit)."""
        ids = np.asarray(ids, np.int64)
        if self.bloom.count + len(ids) > self.bloom.capacity:
            self._grow(self.bloom.count + len(ids))
        self.bloom.add(ids)
        self._pending.append(ids)

    def reserve(self, more: int) -> None:
        """Make room for `more` ids about to be added (a bulk load knows its row count): one
        rebuild now at most, instead of a rebuild from the table at every doubling."""
        if self.bloom.count + more > self.bloom.capacity:
            self._grow(self.bloom.count + more)

    def committed(self, *, wait: bool = True) -> None:
        """After a commit: extend the `id` index over the new rows (a delta; merged when many).

        With ``wait=False`` the index is extended in a background thread while the caller
        streams its next input; lookups meanwhile read the new rows without the index (exact,
        slower). Call :meth:`settle` before the table's next commit; :meth:`close` settles."""
        self.settle()
        self._pending = []
        if wait:
            self._extend_index()
            return
        self._indexing = threading.Thread(target=self._extend_index_noting_errors, daemon=True)
        self._indexing.start()

    def settle(self) -> None:
        """Wait for a background index extension; raise what it raised."""
        if self._indexing is not None:
            self._indexing.join()
            self._indexing = None
        error, self._index_error = self._index_error, None
        if error is not None:
            raise error

    def _extend_index_noting_errors(self) -> None:
        try:
            self._extend_index()
        except BaseException as exc:  # handed to settle(), in the caller's thread
            self._index_error = exc

    def _extend_index(self) -> None:
        """Index the rows the `id` index does not cover, once they are :data:`INDEX_TAIL_ROWS`
        or more: lookups scan the rest (Lance reads unindexed fragments in full), which for
        fewer rows costs less than building their index (a BTREE takes ~260 ns a row, a scan
        of the id column ~10 ns, measured at 10M rows)."""
        dataset = self._dataset()
        rows = dataset.count_rows() if dataset is not None else 0
        if not rows:
            return
        indices = [i for i in dataset.list_indices() if i["fields"] == ["id"]]
        if not indices:
            if rows >= INDEX_TAIL_ROWS:
                dataset.create_scalar_index("id", "BTREE")
            return
        name = indices[0]["name"]
        if dataset.stats.index_stats(name)["num_unindexed_rows"] < INDEX_TAIL_ROWS:
            return
        deltas = len({str(i.get("uuid")) for i in indices})
        merge = deltas if deltas >= MAX_DELTA_INDICES else 0
        dataset.optimize.optimize_indices(num_indices_to_merge=merge, index_names=[name])

    def close(self) -> None:
        """Save the filter (atomically), stamped with the fragments it covers."""
        self.settle()
        dataset = self._dataset()
        covered = _max_fragment(dataset)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        with part.open("wb") as out:
            header = {
                "format": _FORMAT,
                "bits_per_id": BITS_PER_ID,
                "hashes": HASHES,
                "capacity": self.bloom.capacity,
                "count": self.bloom.count,
                "fragments": covered,
                "version": dataset.version if dataset is not None else 0,
            }
            text = json.dumps(header).encode()
            out.write(len(text).to_bytes(4, "little") + text)
            out.write(self.bloom.words.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, self.path)

    # ---- loading ------------------------------------------------------------------------

    def _load(self) -> tuple[BloomFilter, int]:
        """The saved filter and the highest fragment id it covers (-1: none)."""
        dataset = self._dataset()
        saved = _read(self.path)
        if saved is not None and dataset is not None:
            header, words = saved
            fits = (
                header.get("format") == _FORMAT
                and header.get("hashes") == HASHES
                and header.get("bits_per_id") == BITS_PER_ID
                and header.get("version", 0) <= dataset.version  # not a recreated table
            )
            if fits:
                return BloomFilter(header["capacity"], words, header["count"]), header["fragments"]
        rows = dataset.count_rows() if dataset is not None else 0
        return BloomFilter(max(MIN_CAPACITY, 2 * rows)), -1

    def _fold_in(self, covered: int) -> None:
        """Add the ids of the fragments the saved filter does not cover."""
        dataset = self._dataset()
        if dataset is None:
            return
        newer = [f for f in dataset.get_fragments() if f.fragment_id > covered]
        if not newer:
            return
        rows = sum(f.count_rows() for f in newer)
        if self.bloom.count + rows > self.bloom.capacity:
            self._grow(self.bloom.count + rows)  # re-reads every fragment
            return
        if covered >= 0:
            log.info("%s: adding %d ids committed since the key filter was saved", self.table, rows)
        for batch in dataset.to_batches(columns=["id"], fragments=newer, filter=self._filter()):
            self.bloom.add(_ids(batch))

    def _grow(self, needed: int) -> None:
        """Rebuild the filter for twice `needed` ids from the table (amortised: it doubles),
        with the ids added for rows not committed yet."""
        self.bloom = BloomFilter(max(MIN_CAPACITY, 2 * needed))
        dataset = self._dataset()
        if dataset is not None:
            for batch in dataset.to_batches(columns=["id"], filter=self._filter()):
                self.bloom.add(_ids(batch))
        for ids in self._pending:
            self.bloom.add(ids)

    def _lookup(self, candidates: np.ndarray) -> np.ndarray:
        dataset = self._dataset()
        if dataset is None:
            return np.zeros(0, np.int64)
        wanted = pc.field("id").isin(pa.array(candidates))
        scope = self._filter()
        held = dataset.to_table(columns=["id"], filter=wanted if scope is None else wanted & scope)
        return held["id"].to_numpy()

    def _filter(self) -> pc.Expression | None:
        return None if self.scope is None else pc.field(self.scope[0]) == self.scope[1]

    def _dataset(self) -> lance.LanceDataset | None:
        if not self.catalog.has_table(self.table):
            return None
        return self.catalog.dataset(self.table)


def _slug(value: str) -> str:
    """A file-name-safe, collision-free form of a scope value."""
    import hashlib

    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in value)[:40]
    return f"{readable}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def _ids(batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column("id")
    if column.null_count:
        column = pc.drop_null(column)
    return column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _max_fragment(dataset: lance.LanceDataset | None) -> int:
    if dataset is None:
        return -1
    return max((f.fragment_id for f in dataset.get_fragments()), default=-1)


def _read(path: Path) -> tuple[dict, np.ndarray] | None:
    """A saved filter's header and words; None when missing or not whole."""
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(4), "little")
            header = json.loads(fh.read(size))
            words = np.fromfile(fh, np.uint64)
        expected = words_for(int(header["capacity"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (header, words) if len(words) == expected else None
