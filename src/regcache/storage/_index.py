"""The metadata index: manifests, tags and access confirmations, in SQLite.

Blob and manifest bytes live in the content-addressed store; this index keeps
what the store cannot know: which repository a manifest was seen in and its
media type, what each tag resolved to and when the upstream last said so, and
which principal (set of upstream credentials) the upstream confirmed may read
which object. It survives restarts, so the tag map and the confirmations that
outage serving relies on are not lost.

SQLite in WAL mode: readers never wait for the writer; one connection shared
under a lock is plenty for the few small rows a request touches.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs

from regcache.core import Digest, StorageError
from regcache.core._policy import CachedTag

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifests (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, digest)
);
CREATE TABLE IF NOT EXISTS tags (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    validated_at REAL NOT NULL,
    index_admitted INTEGER NOT NULL,
    PRIMARY KEY (registry, repository, tag)
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    last_access REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_access ON blobs (last_access);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access (
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    principal TEXT NOT NULL,
    confirmed_at REAL NOT NULL,
    PRIMARY KEY (registry, repository, digest, principal)
);
"""


@attrs.frozen
class ManifestEntry:
    """A manifest seen in one repository: its digest, media type and size."""

    registry: str
    repository: str
    digest: Digest
    media_type: str
    size: int


class MetadataIndex:
    """The SQLite index under ``data_dir``. Thread-safe; calls are short."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode; a power cut
            # may lose the last transactions, which only costs a re-fetch.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the metadata index {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._lock_path = Path(str(path) + ".lock")
        self._lock_fd: int | None = None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # The connection is in autocommit mode; several statements that must
        # land together get an explicit transaction. Caller holds the lock.
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _run(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"metadata index: {exc}") from exc

    # -- manifests -------------------------------------------------------

    def put_manifest(self, entry: ManifestEntry) -> None:
        """Record that a manifest exists in a repository."""
        self._run(
            "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?)",
            (entry.registry, entry.repository, str(entry.digest), entry.media_type, entry.size),
        )

    def get_manifest(self, registry: str, repository: str, digest: Digest) -> ManifestEntry | None:
        """The manifest entry for a digest in a repository, if cached."""
        rows = self._run(
            "SELECT media_type, size FROM manifests"
            " WHERE registry = ? AND repository = ? AND digest = ?",
            (registry, repository, str(digest)),
        )
        if not rows:
            return None
        media_type, size = rows[0]
        return ManifestEntry(registry, repository, digest, str(media_type), int(str(size)))

    def find_manifest_type(self, digest: Digest) -> str | None:
        """The media type of a manifest digest in any repository, if known."""
        rows = self._run(
            "SELECT media_type FROM manifests WHERE digest = ? LIMIT 1", (str(digest),)
        )
        return str(rows[0][0]) if rows else None

    def repositories(self) -> Iterator[tuple[str, str]]:
        """Every (registry, repository) with a cached manifest, sorted."""
        rows = self._run(
            "SELECT DISTINCT registry, repository FROM manifests ORDER BY registry, repository"
        )
        for registry, repository in rows:
            yield str(registry), str(repository)

    # -- tags ------------------------------------------------------------

    def put_tag(self, registry: str, repository: str, tag: str, cached: CachedTag) -> None:
        """Remember what a tag resolved to and when the upstream said so."""
        self._run(
            "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                registry,
                repository,
                tag,
                str(cached.digest),
                cached.media_type,
                cached.validated_at,
                int(cached.index_admitted),
            ),
        )

    def get_tag(self, registry: str, repository: str, tag: str) -> CachedTag | None:
        """What a tag resolved to, if cached."""
        rows = self._run(
            "SELECT digest, media_type, validated_at, index_admitted FROM tags"
            " WHERE registry = ? AND repository = ? AND tag = ?",
            (registry, repository, tag),
        )
        if not rows:
            return None
        digest, media_type, validated_at, index_admitted = rows[0]
        return CachedTag(
            Digest.parse(str(digest)),
            str(media_type),
            float(str(validated_at)),
            index_admitted=bool(index_admitted),
        )

    def delete_tag(self, registry: str, repository: str, tag: str) -> None:
        """Forget a tag (the upstream said it no longer exists)."""
        self._run(
            "DELETE FROM tags WHERE registry = ? AND repository = ? AND tag = ?",
            (registry, repository, tag),
        )

    # -- blobs: sizes and last use, for the size limit ----------------------

    def record_blob(self, digest: Digest, size: int, now: float) -> None:
        """Account a blob (or manifest) now in the store."""
        self._run("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (str(digest), size, now))

    def touch_blobs(self, last_access: dict[Digest, float]) -> None:
        """Record when blobs were last used (batched: one transaction)."""
        if not last_access:
            return
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany(
                        "UPDATE blobs SET last_access = MAX(last_access, ?) WHERE digest = ?",
                        [(when, str(digest)) for digest, when in last_access.items()],
                    )
            except sqlite3.Error as exc:
                raise StorageError(f"metadata index: {exc}") from exc

    def total_blob_bytes(self) -> int:
        """The size of everything accounted in the store."""
        rows = self._run("SELECT COALESCE(SUM(size), 0) FROM blobs")
        return int(str(rows[0][0]))

    def least_recently_used(self, limit: int) -> list[tuple[Digest, int, float]]:
        """The ``limit`` least recently used blobs: (digest, size, last access)."""
        rows = self._run(
            "SELECT digest, size, last_access FROM blobs ORDER BY last_access LIMIT ?", (limit,)
        )
        return [(Digest.parse(str(d)), int(str(n)), float(str(t))) for d, n, t in rows]

    def all_blobs(self) -> list[tuple[Digest, int, float]]:
        """Every accounted blob: (digest, size, last access)."""
        rows = self._run("SELECT digest, size, last_access FROM blobs ORDER BY digest")
        return [(Digest.parse(str(d)), int(str(n)), float(str(t))) for d, n, t in rows]

    def forget_blob(self, digest: Digest) -> None:
        """Drop everything that refers to a blob that is gone from the store.

        A manifest that is gone takes its tags with it: a tag must never
        resolve to content the cache no longer has.
        """
        text = str(digest)
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("DELETE FROM blobs WHERE digest = ?", (text,))
                    self._db.execute("DELETE FROM manifests WHERE digest = ?", (text,))
                    self._db.execute("DELETE FROM tags WHERE digest = ?", (text,))
                    self._db.execute("DELETE FROM access WHERE digest = ?", (text,))
            except sqlite3.Error as exc:
                raise StorageError(f"metadata index: {exc}") from exc

    def tags_of(self, registry: str, repository: str) -> list[tuple[str, CachedTag]]:
        """The cached tags of a repository."""
        rows = self._run(
            "SELECT tag, digest, media_type, validated_at, index_admitted FROM tags"
            " WHERE registry = ? AND repository = ? ORDER BY tag",
            (registry, repository),
        )
        return [
            (
                str(tag),
                CachedTag(Digest.parse(str(d)), str(m), float(str(v)), index_admitted=bool(i)),
            )
            for tag, d, m, v, i in rows
        ]

    def manifests_of(self, registry: str, repository: str) -> list[ManifestEntry]:
        """The cached manifests of a repository."""
        rows = self._run(
            "SELECT digest, media_type, size FROM manifests"
            " WHERE registry = ? AND repository = ? ORDER BY digest",
            (registry, repository),
        )
        return [
            ManifestEntry(registry, repository, Digest.parse(str(d)), str(m), int(str(n)))
            for d, m, n in rows
        ]

    def delete_repository_tag(self, registry: str, repository: str, tag: str | None) -> int:
        """Forget one tag, or every tag and manifest entry of a repository."""
        with self._lock:
            try:
                with self._transaction():
                    if tag is not None:
                        cursor = self._db.execute(
                            "DELETE FROM tags WHERE registry = ? AND repository = ? AND tag = ?",
                            (registry, repository, tag),
                        )
                        return cursor.rowcount
                    count = self._db.execute(
                        "DELETE FROM tags WHERE registry = ? AND repository = ?",
                        (registry, repository),
                    ).rowcount
                    count += self._db.execute(
                        "DELETE FROM manifests WHERE registry = ? AND repository = ?",
                        (registry, repository),
                    ).rowcount
                    return count
            except sqlite3.Error as exc:
                raise StorageError(f"metadata index: {exc}") from exc

    def unreferenced_blobs(self) -> list[Digest]:
        """Accounted blobs that no cached manifest of any repository is known to be."""
        rows = self._run(
            "SELECT digest FROM blobs WHERE digest NOT IN (SELECT digest FROM manifests)"
        )
        return [Digest.parse(str(d)) for (d,) in rows]

    # -- counters (persisted statistics) ---------------------------------

    def add_counters(self, increments: dict[str, int]) -> None:
        """Add to persisted counters (hits, misses, bytes served ...)."""
        if not increments:
            return
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO counters VALUES (?, ?)"
                        " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        list(increments.items()),
                    )
            except sqlite3.Error as exc:
                raise StorageError(f"metadata index: {exc}") from exc

    def mark_open(self) -> bool:
        """Note that a process uses the index; whether the last user ended cleanly.

        A process that finds itself alone (an exclusive lock on the lock file
        beside the database) reads the ``dirty`` mark left by the last one and
        sets it; every user then holds a shared lock for its lifetime. The
        last user to close cleanly clears the mark. After an unclean end (a
        crash, kill -9) the index and the store may disagree and need
        reconciling; after a clean one the store is not walked at start-up.
        """
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Others are running: the index is in use and consistent enough.
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return True
        clean = self.counters().get("dirty", 0) == 0
        self._run(
            "INSERT INTO counters VALUES ('dirty', 1) ON CONFLICT(name) DO UPDATE SET value = 1"
        )
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        return clean

    def mark_closed(self) -> None:
        """Note a clean end (see :meth:`mark_open`)."""
        if self._lock_fd is None:
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._run("UPDATE counters SET value = 0 WHERE name = 'dirty'")
        except BlockingIOError:
            pass  # another process still uses the index; it clears the mark
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def counters(self) -> dict[str, int]:
        """Every persisted counter."""
        return {str(n): int(str(v)) for n, v in self._run("SELECT name, value FROM counters")}

    # -- access confirmations --------------------------------------------

    def confirm_access(
        self, registry: str, repository: str, digest: Digest, principal: str, now: float
    ) -> None:
        """Record that the upstream let ``principal`` read ``digest`` in ``repository``."""
        self._run(
            "INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?, ?)",
            (registry, repository, str(digest), principal, now),
        )

    def access_confirmed_at(
        self, registry: str, repository: str, digest: Digest, principal: str
    ) -> float | None:
        """When the upstream last confirmed that access, or None if it never did."""
        rows = self._run(
            "SELECT confirmed_at FROM access"
            " WHERE registry = ? AND repository = ? AND digest = ? AND principal = ?",
            (registry, repository, str(digest), principal),
        )
        return float(str(rows[0][0])) if rows else None
