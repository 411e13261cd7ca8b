"""Recently served manifests, kept in memory.

Manifests are small, immutable (named by their digest) and asked for far more
often than blobs: every pull starts with one or two, and a fleet of nodes asks
for the same ones. Reading one back from the store costs an ``open`` and a
``read`` per request; this keeps the most recently used in memory, within a
byte budget. It holds only bytes that were verified against their digest
when they entered the store, and it never decides *whether* something may be
served: the engine still asks the index (and the access rule) first.
"""

from __future__ import annotations

from collections import OrderedDict

from regcache.core import Digest

#: The default byte budget: thousands of typical manifests (a few KiB each).
DEFAULT_BUDGET = 16 * 1024 * 1024


class ManifestMemory:
    """A least-recently-used map of manifest digest -> exact bytes, bounded in bytes."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[Digest, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: Digest) -> bytes | None:
        """The bytes of ``digest`` if held, marking them recently used."""
        content = self._entries.get(digest)
        if content is not None:
            self._entries.move_to_end(digest)
        return content

    def put(self, digest: Digest, content: bytes) -> None:
        """Hold the verified bytes of ``digest``; the oldest go past the budget."""
        if len(content) > self.budget:
            return
        previous = self._entries.pop(digest, None)
        if previous is not None:
            self.size -= len(previous)
        self._entries[digest] = content
        self.size += len(content)
        while self.size > self.budget:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped)

    def discard(self, digest: Digest) -> None:
        """Forget ``digest`` (it left the store)."""
        content = self._entries.pop(digest, None)
        if content is not None:
            self.size -= len(content)
