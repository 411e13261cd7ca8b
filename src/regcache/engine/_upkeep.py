"""Keeping the cache under its size limit, and knowing what it holds.

Usage is gathered in memory (a cache hit costs a dict update, not a disk
write) and flushed to the index in batches; committed content is accounted
as it lands. When the store passes ``max_size`` (the high watermark) the
least recently used content is evicted down to :data:`LOW_WATERMARK` of it,
in one batch. After an unclean end the index is reconciled with the store.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import trio

from regcache.core import Digest, RegcacheError
from regcache.core._store import BlobStore
from regcache.storage._index import MetadataIndex

log = logging.getLogger("regcache.engine")

#: How often access times and counters reach the index.
UPKEEP_INTERVAL = 30.0

#: Eviction runs when the store passes max_size (the high watermark) and
#: stops at this fraction of it, so it runs in batches, not per blob.
LOW_WATERMARK = 0.9

#: Candidates read per eviction run; ample for a batch down to the low mark.
EVICTION_SCAN = 100_000

#: Cache outcomes that served stored content, and those that went upstream.
_FROM_CACHE = frozenset({"hit", "stale", "revalidated"})
_FROM_UPSTREAM = frozenset({"miss", "joined", "upstream"})


class Upkeep:
    """Usage accounting and the size limit of one engine's store."""

    def __init__(
        self,
        index: MetadataIndex,
        store: BlobStore,
        *,
        max_size: int,
        in_flight: Callable[[Digest], bool],
        clock: Callable[[], float],
        on_evicted: Callable[[Digest], None] = lambda _digest: None,
    ) -> None:
        self.index = index
        self.store = store
        self.max_size = max_size
        self._in_flight = in_flight
        #: Told of each evicted digest (the engine drops it from memory too).
        self._on_evicted = on_evicted
        self._clock = clock
        self._last_access: dict[Digest, float] = {}
        self._counters: collections.Counter[str] = collections.Counter()
        self._due = trio.Event()
        #: The store's size as the index accounts it.
        self.stored_bytes = 0
        #: How many blobs and manifests the size limit has evicted.
        self.evictions = 0

    def note_use(self, digest: Digest, cache: str, served_bytes: int) -> None:
        """Remember a use of cached content, cheaply: no disk write per request."""
        if cache in _FROM_CACHE:
            self._last_access[digest] = self._clock()
            self._counters["bytes_from_cache"] += served_bytes
        elif cache in _FROM_UPSTREAM:
            self._counters["bytes_from_upstream"] += served_bytes
        self._counters[f"requests_{cache}"] += 1

    def committed(self, digest: Digest, size: int, used_at: float | None = None) -> None:
        """Account a blob just committed; ``used_at``: when clients last got it."""
        self.index.record_blob(digest, size, self._clock() if used_at is None else used_at)
        self.stored_bytes += size
        if self.stored_bytes > self.max_size:
            self._due.set()

    def reconcile(self) -> tuple[int, int]:
        """Make the index agree with the store, after a crash or by an operator.

        Index entries whose file is missing are dropped (with the tags and
        manifests that refer to them); files the index does not account (a
        crash between commit and accounting) are accounted. Blocking: run it
        in a worker thread. Returns (dropped, added).
        """
        # The index first: a blob committed during the walk is then in
        # `stored` (files appear before they are accounted), never dropped.
        known = {digest for digest, _, _ in self.index.all_blobs()}
        stored = {info.digest: info.size for info in self.store.iter_blobs()}
        dropped = 0
        for digest in known - stored.keys():
            self.index.forget_blob(digest)
            dropped += 1
        now = self._clock()
        for digest in stored.keys() - known:
            self.index.record_blob(digest, stored[digest], now)
        return dropped, len(stored.keys() - known)

    def flush(self) -> None:
        """Write the access times and counters gathered in memory to the index."""
        last_access, self._last_access = self._last_access, {}
        counters, self._counters = self._counters, collections.Counter()
        self.index.touch_blobs(last_access)
        self.index.add_counters(dict(counters))

    async def run(self, clean_start: bool) -> None:
        """Reconcile once; then flush usage now and then and evict past max_size."""
        if not clean_start:
            dropped, added = await trio.to_thread.run_sync(self.reconcile)
            log.info(
                "the last run did not end cleanly: index reconciled with the store"
                " (%d missing entries dropped, %d files accounted)",
                dropped,
                added,
            )
        self.stored_bytes = self.index.total_blob_bytes()
        if self.stored_bytes > self.max_size:
            self._due.set()
        while True:
            with trio.move_on_after(UPKEEP_INTERVAL):
                await self._due.wait()
            self._due = trio.Event()
            try:
                self.flush()
                if self.stored_bytes > self.max_size:
                    await self.evict()
            except RegcacheError as exc:
                log.error("cache upkeep failed: %s", exc)  # noqa: TRY400 - says it all

    async def evict(self, *, dry_run: bool = False) -> list[tuple[Digest, int]]:
        """Evict least recently used content until the store is under the low watermark.

        Content being fetched is never chosen (it is not in the store yet); a
        blob being sent stays readable to that client, whose open file keeps
        its bytes. Returns what was (or, with ``dry_run``, would be) evicted.
        """
        self.flush()
        total = self.index.total_blob_bytes()
        target = int(self.max_size * LOW_WATERMARK)
        chosen: list[tuple[Digest, int]] = []
        if total <= self.max_size:
            self.stored_bytes = total
            return chosen
        for digest, size, _ in self.index.least_recently_used(EVICTION_SCAN):
            if total <= target:
                break
            if self._in_flight(digest):
                continue
            chosen.append((digest, size))
            total -= size
        if dry_run:
            return chosen
        for digest, size in chosen:
            await trio.to_thread.run_sync(self.store.delete, digest)
            self.index.forget_blob(digest)
            self._on_evicted(digest)
            self.evictions += 1
            log.info("evicted %s (%d bytes) to stay under max_size", digest, size)
        self.stored_bytes = self.index.total_blob_bytes()
        return chosen
