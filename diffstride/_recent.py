"""A small least-recently-used map for the host plan's caches (``_plan``'s device arrays,
``_api``'s runners of repeat calls), safe across threads: ``DataParallel`` calls its replicas
from threads, and an ``OrderedDict`` reordered by two at once would lose entries.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

__all__ = ["Recent"]


class Recent:
    """The ``size`` entries last used of a map. A ``None`` key is never kept."""

    def __init__(self, size: int) -> None:
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        if key is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        if key is None:
            return
        with self._lock:
            self._entries[key] = value
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
