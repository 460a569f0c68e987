"""A small thread-safe LRU mapping, bounded by entries and by total size.

The one in-memory cache the product keeps wherever it caches: the review server's image
locations and thumbnails, tar member indexes, and the audit's reference features and layouts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class Lru:
    """At most `max_items` entries and, with `max_bytes`, entries whose sizes (as given to
    :meth:`put`) sum to at most that; the least recently used go first."""

    def __init__(self, max_items: int, max_bytes: int | None = None) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._sizes: dict[Any, int] = {}
        self._max_items, self._max_bytes, self._bytes = max_items, max_bytes, 0
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[Any]:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def put(self, key: Any, value: Any, size: int = 0) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._sizes.pop(key, 0)
            self._items[key] = value
            self._items.move_to_end(key)
            self._sizes[key] = size
            self._bytes += size
            while len(self._items) > self._max_items or (
                self._max_bytes is not None and self._bytes > self._max_bytes
            ):
                old, _ = self._items.popitem(last=False)
                self._bytes -= self._sizes.pop(old, 0)
