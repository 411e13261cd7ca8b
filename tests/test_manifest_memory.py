"""The engine's in-memory manifest LRU: bounded in bytes, least recently used out first."""

from __future__ import annotations

from regcache.core import Digest
from regcache.engine._memory import ManifestMemory


def manifest(n: int, size: int = 100) -> tuple[Digest, bytes]:
    content = (b"%d:" % n).ljust(size, b"x")
    return Digest.of_bytes(content), content


def test_holds_what_fits_and_drops_the_least_recently_used() -> None:
    memory = ManifestMemory(budget=300)
    entries = [manifest(n) for n in range(3)]
    for digest, content in entries:
        memory.put(digest, content)
    assert memory.size == 300 and len(memory) == 3
    # Using the oldest makes the second one the least recently used.
    assert memory.get(entries[0][0]) == entries[0][1]
    fourth = manifest(3)
    memory.put(*fourth)
    assert memory.get(entries[1][0]) is None
    assert memory.get(entries[0][0]) == entries[0][1]
    assert memory.get(entries[2][0]) == entries[2][1]
    assert memory.get(fourth[0]) == fourth[1]
    assert memory.size == 300


def test_a_manifest_larger_than_the_budget_is_not_held() -> None:
    memory = ManifestMemory(budget=150)
    small = manifest(1)
    memory.put(*small)
    big = manifest(2, size=151)
    memory.put(*big)
    assert memory.get(big[0]) is None
    assert memory.get(small[0]) == small[1]
    assert memory.size == 100


def test_put_again_and_discard_keep_the_size_right() -> None:
    memory = ManifestMemory(budget=1000)
    digest, content = manifest(1)
    memory.put(digest, content)
    memory.put(digest, content)
    assert memory.size == 100 and len(memory) == 1
    memory.discard(digest)
    memory.discard(digest)
    assert memory.size == 0 and memory.get(digest) is None
