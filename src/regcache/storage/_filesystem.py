"""The filesystem blob store: content-addressed files under one directory.

Implements :class:`regcache.core.BlobStore` (see ``regcache.core._store``) on
a local POSIX file system. Layout under the root::

    blobs/<algorithm>/<hex[:2]>/<hex>   committed blobs, complete and verified
    tmp/<pid>-<random>.partial          content being written

Partial files live in ``tmp/`` on the same file system as ``blobs/``, so
publishing one is a single atomic directory operation: a blob path appears
only when it names a complete, verified, fsynced file. It is published with a
hard link (``link(2)`` fails if the name exists), so when two writers of one
digest race, in threads or in processes, the first one wins and the second
keeps the existing file. On a file system without hard links the store falls
back to ``rename(2)``, which is just as safe for readers (both files hold the
same bytes) but may count the blob twice in this process's size total.

Each writer holds an exclusive ``flock(2)`` on its partial file for as long
as it lives. :meth:`FilesystemStore.recover` removes only partial files whose
lock it can take, that is those of writers that died, so it is safe to call
at any time, from any process sharing the directory. ``flock`` works across
processes on local file systems (on NFS, Linux emulates it with byte-range
locks).

Directories are created with mode 0o755 and files with 0o644 (less the
umask): blobs are public content, addressed by their hash. Whoever must not
read the cache must be kept out of the root's parent directory.

:meth:`FilesystemStore.total_size` is kept in memory: the tree is walked once
when the store is opened, then every commit and delete made through this
object updates the count. Commits and deletes made by another process sharing
the directory are not seen until :meth:`FilesystemStore.rescan_size`.

Every ``OSError`` is translated into :class:`regcache.core.StorageError` with
a message that says what failed and why (a full disk says so).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, Self

from regcache.core import (
    ALGORITHM_HEX_LENGTHS,
    Digest,
    ErrorCode,
    LocalProtocolError,
    RegcacheError,
    RemoteProtocolError,
    StorageError,
)
from regcache.core._store import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobWriter,
    BlobWriterEvent,
    BlobWriterState,
    next_writer_state,
    validate_blob_digest,
)

_DIR_MODE: Final = 0o755
_FILE_MODE: Final = 0o644
_PARTIAL_SUFFIX: Final = ".partial"

# How many fresh partial-file names begin_write tries before it gives up. A
# name is 64 random bits plus the pid, so a collision is all but impossible;
# the retries cover a concurrent recover() removing a file in the instant
# between its creation and its lock, and the bound keeps a broken tmp
# directory from looping forever.
_PARTIAL_NAME_ATTEMPTS: Final = 8

# How many times a commit retries publishing when the blob it found in place
# is deleted before it could look at it. A concurrent delete is rare; the
# bound keeps a pathological delete loop from holding a commit forever.
_PUBLISH_ATTEMPTS: Final = 8

# File systems that cannot make hard links answer link(2) with one of these;
# the store then publishes with rename(2) instead.
_NO_HARD_LINK_ERRNOS: Final = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)

# Why an operation failed, in words an operator acts on.
_ERRNO_REASONS: Final = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is too large: the file system refused the write",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an I/O error occurred on the device",
    errno.EMFILE: "this process has too many open files",
    errno.ENFILE: "the system has too many open files",
    errno.ENOENT: "a directory of the store is missing",
    errno.ENOTDIR: "a path in the store is not a directory",
}


def _storage_error(exc: OSError, action: str) -> StorageError:
    """The StorageError to raise (``from exc``) when ``action`` failed with ``exc``."""
    reason = _ERRNO_REASONS.get(exc.errno or 0)
    detail = exc.strerror or str(exc)
    message = (
        f"could not {action}: {reason} ({detail})" if reason else f"could not {action}: {detail}"
    )
    return StorageError(message)


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (raises OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore(BlobStore):
    """A content-addressed blob store in a directory of a local file system.

    Opening the store creates ``root`` (and its ``blobs/`` and ``tmp/``
    directories) if needed and, unless ``scan=False``, walks the committed
    blobs once to learn their total size, so on a large cache it is worth
    doing in a worker thread. (regcache's engine keeps the size in its index
    and opens the store with ``scan=False``.)
    It does not remove partial files left by a crash: call :meth:`recover`.

    Every method is safe to call from several threads at once, and several
    processes may share one root.
    """

    def __init__(self, root: str | os.PathLike[str], *, scan: bool = True) -> None:
        self.root = Path(root)
        self._blobs_dir = self.root / "blobs"
        self._tmp_dir = self.root / "tmp"
        self._size_lock = threading.Lock()
        self._total_size = 0
        for directory in (self.root, self._blobs_dir, self._tmp_dir):
            try:
                directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise _storage_error(exc, f"create the store directory {directory}") from exc
        if scan:
            self.rescan_size()

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    # -- reading -------------------------------------------------------------

    def stat(self, digest: Digest) -> BlobInfo | None:
        """The committed blob's info, or ``None`` if the store does not hold it."""
        path = self._blob_path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _storage_error(exc, f"look up blob {digest}") from exc
        return BlobInfo(digest, size)

    def has(self, digest: Digest) -> bool:
        """Whether a committed blob with this digest is in the store."""
        return self.stat(digest) is not None

    def open_read(self, digest: Digest) -> BinaryIO:
        """Open a committed blob for reading; :class:`BlobNotFoundError` if absent.

        The file object has a real ``fileno()`` (for ``os.sendfile``), and it
        keeps reading the whole blob even if the blob is deleted meanwhile.
        """
        path = self._blob_path(digest)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(digest) from None
        except OSError as exc:
            raise _storage_error(exc, f"open blob {digest}") from exc

    def local_path(self, digest: Digest) -> str | None:
        """The committed blob's file path, or ``None`` if the store does not hold it.

        The file may be deleted between this call and its use; a caller that
        cannot tolerate that should use :meth:`open_read` and its ``fileno()``.
        """
        if self.stat(digest) is None:
            return None
        return str(self._blob_path(digest))

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every committed blob, in no particular order.

        Files in ``blobs/`` whose path is not a valid digest are skipped.
        """
        try:
            yield from self._walk_blobs()
        except OSError as exc:
            raise _storage_error(exc, f"list the blobs in {self._blobs_dir}") from exc

    def total_size(self) -> int:
        """The size in bytes of all committed blobs, as counted by this process."""
        with self._size_lock:
            return self._total_size

    def rescan_size(self) -> int:
        """Walk the blobs again to correct :meth:`total_size`; return the new total.

        Needed only when other processes commit or delete in the same root.
        A commit or delete that runs during the walk may be counted or not.
        """
        total = sum(info.size for info in self.iter_blobs())
        with self._size_lock:
            self._total_size = total
        return total

    # -- writing and removing ---------------------------------------------------

    def begin_write(self, digest: Digest) -> FilesystemBlobWriter:
        """Start a verified write of the blob with this digest."""
        blob_path = self._blob_path(digest)
        partial_path, partial_file = self._create_partial(digest)
        return FilesystemBlobWriter(self, digest, blob_path, partial_path, partial_file)

    def delete(self, digest: Digest) -> bool:
        """Remove a committed blob; ``True`` if it was there. Open readers are unaffected.

        The removal is not fsynced: after a crash a deleted blob may be back,
        which is harmless in a cache (it is still complete and verified).
        """
        path = self._blob_path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(exc, f"delete blob {digest}") from exc
        self._add_size(-size)
        return True

    def recover(self) -> int:
        """Remove the partial files of writers that died; return how many were removed.

        A partial file whose writer is alive, in this process or another, is
        locked by it and kept, so this may run at any time.
        """
        removed = 0
        try:
            with os.scandir(self._tmp_dir) as entries:
                names = [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        except OSError as exc:
            raise _storage_error(exc, f"list the partial files in {self._tmp_dir}") from exc
        for name in names:
            if self._remove_abandoned(self._tmp_dir / name):
                removed += 1
        return removed

    # -- internals -----------------------------------------------------------------

    def _blob_path(self, digest: Digest) -> Path:
        checked = validate_blob_digest(digest)
        return self._blobs_dir / checked.algorithm / checked.hex[:2] / checked.hex

    def _add_size(self, delta: int) -> None:
        with self._size_lock:
            self._total_size += delta

    def _walk_blobs(self) -> Iterator[BlobInfo]:
        with os.scandir(self._blobs_dir) as algorithm_dirs:
            for algorithm_dir in algorithm_dirs:
                algorithm = algorithm_dir.name
                if algorithm not in ALGORITHM_HEX_LENGTHS:
                    continue
                if not algorithm_dir.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(algorithm_dir.path) as shard_dirs:
                    for shard_dir in shard_dirs:
                        if shard_dir.is_dir(follow_symlinks=False):
                            yield from self._walk_shard(algorithm, shard_dir)

    def _walk_shard(self, algorithm: str, shard_dir: os.DirEntry[str]) -> Iterator[BlobInfo]:
        with os.scandir(shard_dir.path) as blob_files:
            for blob_file in blob_files:
                name = blob_file.name
                if not name.startswith(shard_dir.name):
                    continue
                try:
                    digest = validate_blob_digest(Digest(algorithm, name))
                except LocalProtocolError:
                    continue
                try:
                    if not blob_file.is_file(follow_symlinks=False):
                        continue
                    size = blob_file.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue  # deleted while we walked
                yield BlobInfo(digest, size)

    def _create_partial(self, digest: Digest) -> tuple[Path, io.FileIO]:
        """Create, lock and return a fresh partial file in ``tmp/``."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        for _ in range(_PARTIAL_NAME_ATTEMPTS):
            path = self._tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}{_PARTIAL_SUFFIX}"
            try:
                fd = os.open(path, flags, _FILE_MODE)
            except FileExistsError:
                continue
            except FileNotFoundError:
                # tmp/ was removed under us (an operator cleaning up): remake it.
                try:
                    self._tmp_dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                except OSError as exc:
                    raise _storage_error(exc, f"create the directory {self._tmp_dir}") from exc
                continue
            except OSError as exc:
                raise _storage_error(exc, f"create a partial file for blob {digest}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # recover() may have taken the lock and removed the file in the
                # instant before we locked it; then the name is gone.
                if os.fstat(fd).st_ino == path.stat().st_ino:
                    return path, io.FileIO(fd, "wb", closefd=True)
            except FileNotFoundError:
                pass
            except OSError as exc:
                os.close(fd)
                raise _storage_error(exc, f"lock a partial file for blob {digest}") from exc
            os.close(fd)
        raise StorageError(
            f"could not create a partial file for blob {digest} in {self._tmp_dir}:"
            " each new file vanished before it could be locked"
        )

    def _remove_abandoned(self, path: Path) -> bool:
        """Remove the partial file at ``path`` if no live writer holds its lock."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _storage_error(exc, f"open the partial file {path}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its writer is alive
            try:
                path.unlink()
            except FileNotFoundError:
                return False  # its writer committed or aborted meanwhile
            else:
                return True
        except OSError as exc:
            raise _storage_error(exc, f"remove the partial file {path}") from exc
        finally:
            os.close(fd)

    def _ensure_blob_dirs(self, blob_path: Path) -> None:
        """Create the algorithm and shard directories of ``blob_path``, durably."""
        shard_dir = blob_path.parent
        for directory in (shard_dir.parent, shard_dir):
            try:
                directory.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                continue
            _fsync_dir(directory.parent)


class FilesystemBlobWriter(BlobWriter):
    """A verified write of one blob into a :class:`FilesystemStore`.

    The content goes to a locked partial file in ``tmp/``, unbuffered, so
    that every byte counted in :attr:`bytes_written` is there for readers of
    :meth:`open_partial`. Made by :meth:`FilesystemStore.begin_write`.
    """

    def __init__(
        self,
        store: FilesystemStore,
        digest: Digest,
        blob_path: Path,
        partial_path: Path,
        partial_file: io.FileIO,
    ) -> None:
        self._store = store
        self._digest = digest
        self._blob_path = blob_path
        self._verifier = digest.verifier()
        self._file = partial_file
        self._bytes_written = 0
        # Guards _state and _path, which open_partial reads from other threads.
        self._lock = threading.Lock()
        self._state = BlobWriterState.OPEN
        # Where the content is: the partial file, then the blob once committed.
        self._path = partial_path

    def __repr__(self) -> str:
        return f"<FilesystemBlobWriter {self._digest} {self._state.value} {self._bytes_written}B>"

    @property
    def digest(self) -> Digest:
        """The digest the content must hash to."""
        return self._digest

    @property
    def bytes_written(self) -> int:
        """How many bytes have been written; readers of the partial content stop here."""
        return self._bytes_written

    @property
    def state(self) -> BlobWriterState:
        """Whether the writer is open, committed or aborted."""
        return self._state

    def write(self, chunk: bytes | memoryview) -> None:
        """Append ``chunk``; on a storage failure abort and raise :class:`StorageError`."""
        next_writer_state(self._state, BlobWriterEvent.WRITE, self._digest)
        view = memoryview(chunk).cast("B")
        try:
            remaining = view
            while remaining:
                written = self._file.write(remaining)
                remaining = remaining[written:]
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, f"write blob {self._digest}") from exc
        self._verifier.update(view)
        # Last, so that readers told this count find the bytes in the file.
        self._bytes_written += view.nbytes

    def open_partial(self) -> BinaryIO:
        """A reader over the content written so far (after commit: the blob).

        Raises :class:`StorageError` if the writer was aborted: its content is gone.
        """
        with self._lock:
            if self._state is BlobWriterState.ABORTED:
                raise StorageError(
                    f"the write of blob {self._digest} was aborted; its content is gone"
                )
            next_writer_state(self._state, BlobWriterEvent.OPEN_PARTIAL, self._digest)
            try:
                return self._path.open("rb")
            except OSError as exc:
                raise _storage_error(exc, f"open the partial content of {self._digest}") from exc

    def verify(self, expected_size: int | None = None) -> None:
        """Check the content against the digest (and size); no disk access.

        Raises :class:`DigestMismatchError` or :class:`RemoteProtocolError`
        (``SIZE_INVALID``), leaving the writer aborted.
        """
        next_writer_state(self._state, BlobWriterEvent.VERIFY, self._digest)
        try:
            self._verifier.verify()
            if expected_size is not None and expected_size != self._bytes_written:
                # The content came from upstream (it matched its digest, so the
                # announced size was wrong): a client is not at fault, so 502.
                raise RemoteProtocolError(
                    ErrorCode.SIZE_INVALID,
                    f"blob {self._digest} is {self._bytes_written} bytes,"
                    f" not the {expected_size} announced",
                    status=502,
                    detail={"expected": expected_size, "actual": self._bytes_written},
                )
        except RegcacheError:
            self.abort()
            raise
        with self._lock:
            self._state = BlobWriterState.VERIFIED

    def commit(self, expected_size: int | None = None) -> BlobInfo:
        """Verify the content (unless :meth:`verify` did), then publish it durably and atomically.

        Raises :class:`DigestMismatchError`, :class:`RemoteProtocolError`
        (``SIZE_INVALID``) or :class:`StorageError`; each leaves the writer
        aborted and nothing published. If the blob is already in the store it
        is kept and its info returned.
        """
        next_writer_state(self._state, BlobWriterEvent.COMMIT, self._digest)
        if self._state is BlobWriterState.OPEN:
            self.verify(expected_size)
        try:
            os.fsync(self._file.fileno())
            self._store._ensure_blob_dirs(self._blob_path)
            info = self._publish()
        except OSError as exc:
            self.abort()
            raise _storage_error(exc, f"commit blob {self._digest}") from exc
        # The blob is visible from here on; what remains is making it durable.
        with contextlib.suppress(OSError):
            self._file.close()  # releases the lock
        try:
            _fsync_dir(self._blob_path.parent)
        except OSError as exc:
            raise _storage_error(
                exc,
                f"make blob {self._digest} durable (it is committed but may not survive a crash)",
            ) from exc
        return info

    def abort(self) -> None:
        """Discard the content. Idempotent; a no-op after commit; never raises for I/O.

        A partial file that cannot be removed now is removed by the next
        :meth:`FilesystemStore.recover`.
        """
        with self._lock:
            new_state = next_writer_state(self._state, BlobWriterEvent.ABORT, self._digest)
            if self._state not in (BlobWriterState.OPEN, BlobWriterState.VERIFIED):
                return
            self._state = new_state
            path = self._path
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.abort()

    def _publish(self) -> BlobInfo:
        """Give the verified partial file its blob name; raises OSError."""
        size = self._bytes_written
        partial_path, blob_path = self._path, self._blob_path
        with self._lock:
            existing_size = self._place(partial_path, blob_path)
            if existing_size is not None and existing_size != size:
                # Same digest, different size: the existing file was damaged
                # outside the store. Ours is verified; it takes the place.
                partial_path.replace(blob_path)
                self._store._add_size(size - existing_size)
            elif existing_size is None:
                self._store._add_size(size)
            with contextlib.suppress(OSError):
                partial_path.unlink()  # a leftover is removed by recover()
            self._path = blob_path
            self._state = next_writer_state(self._state, BlobWriterEvent.COMMIT, self._digest)
        return BlobInfo(self._digest, size)

    @staticmethod
    def _place(partial_path: Path, blob_path: Path) -> int | None:
        """Give the partial file the blob's name unless a blob is there.

        Returns the size of the blob found there, or ``None`` if ours was
        placed. Raises OSError.
        """
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                blob_path.hardlink_to(partial_path)
            except FileExistsError:
                try:
                    return blob_path.stat().st_size
                except FileNotFoundError:
                    continue  # deleted between the link and the stat: try again
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINK_ERRNOS:
                    raise
                break
            else:
                return None
        # No hard links on this file system (or a delete raced every
        # attempt): rename(2) is just as atomic, but replaces what is there.
        try:
            return blob_path.stat().st_size
        except FileNotFoundError:
            partial_path.replace(blob_path)
            return None
