"""The content-addressed store interface: the types every storage backend speaks.

A store holds blobs by digest (OCI image spec, "Digests"; OCI distribution
spec, "Pulling blobs"). Content enters only through a :class:`BlobWriter`,
which hashes it as it is written and publishes it under its digest only once
it has been verified, atomically, so that a reader sees a blob whole or not at
all. While a writer is still downloading, other readers may follow the bytes
written so far (:meth:`BlobWriter.open_partial`); how far they may read is
coordinated by the caller through :attr:`BlobWriter.bytes_written`.

This module is sans-IO: it holds the protocols, the values they exchange, the
writer's state table and the digest check every backend runs before it turns
a digest into a storage key. The backends (``regcache.storage``) do the I/O.
Store methods are synchronous; callers run the slow ones (``commit``,
``delete``, ``iter_blobs``, ``recover``) in a worker thread, so a backend must
accept concurrent calls from several threads.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterator
from typing import BinaryIO, Final, Protocol, Self

import attrs

from ._digest import ALGORITHM_HEX_LENGTHS, Digest
from ._errors import LocalProtocolError, StorageError

# The only characters a digest's hex may hold once it reaches a backend: a
# digest becomes a file name or an object key, so anything else (a slash, a
# dot, an upper-case letter that would alias another blob) is refused.
_LOWER_HEX: Final = frozenset("0123456789abcdef")


@attrs.frozen
class BlobInfo:
    """What a store knows about a committed blob: its digest and its size in bytes."""

    digest: Digest
    size: int


class BlobNotFoundError(StorageError):
    """The store holds no committed blob with this digest."""

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        super().__init__(f"blob {digest} is not in the store")


class BlobWriterState(enum.Enum):
    """Where a :class:`BlobWriter` is in its life."""

    #: Accepting content; nothing is visible to readers of the store yet.
    OPEN = "open"
    #: All content written and hashed to the digest; not published yet, and
    #: no more content is accepted.
    VERIFIED = "verified"
    #: Verified and published under its digest.
    COMMITTED = "committed"
    #: Abandoned (by the caller, or after a failure); nothing was published.
    ABORTED = "aborted"


class BlobWriterEvent(enum.Enum):
    """An operation asked of a :class:`BlobWriter`."""

    WRITE = "write"
    OPEN_PARTIAL = "open_partial"
    VERIFY = "verify"
    COMMIT = "commit"
    ABORT = "abort"


_WRITER_TRANSITIONS: Final[dict[tuple[BlobWriterState, BlobWriterEvent], BlobWriterState]] = {
    (BlobWriterState.OPEN, BlobWriterEvent.WRITE): BlobWriterState.OPEN,
    (BlobWriterState.OPEN, BlobWriterEvent.OPEN_PARTIAL): BlobWriterState.OPEN,
    (BlobWriterState.OPEN, BlobWriterEvent.VERIFY): BlobWriterState.VERIFIED,
    (BlobWriterState.OPEN, BlobWriterEvent.COMMIT): BlobWriterState.COMMITTED,
    (BlobWriterState.OPEN, BlobWriterEvent.ABORT): BlobWriterState.ABORTED,
    # Verified content may be read (followers send it out while it is made
    # durable) and then published or dropped, but not added to.
    (BlobWriterState.VERIFIED, BlobWriterEvent.OPEN_PARTIAL): BlobWriterState.VERIFIED,
    (BlobWriterState.VERIFIED, BlobWriterEvent.COMMIT): BlobWriterState.COMMITTED,
    (BlobWriterState.VERIFIED, BlobWriterEvent.ABORT): BlobWriterState.ABORTED,
    # A follower that arrives just after the commit still gets the content.
    (BlobWriterState.COMMITTED, BlobWriterEvent.OPEN_PARTIAL): BlobWriterState.COMMITTED,
    # Abort is what cleanup paths call (a context manager's exit): after a
    # commit it must leave the published blob alone, and it may be repeated.
    (BlobWriterState.COMMITTED, BlobWriterEvent.ABORT): BlobWriterState.COMMITTED,
    (BlobWriterState.ABORTED, BlobWriterEvent.ABORT): BlobWriterState.ABORTED,
}


def next_writer_state(
    state: BlobWriterState, event: BlobWriterEvent, digest: Digest
) -> BlobWriterState:
    """The state a writer moves to on ``event``; :class:`LocalProtocolError` if not allowed.

    ``digest`` only names the blob in the error message.
    """
    try:
        return _WRITER_TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"cannot {event.value} on the writer of blob {digest}: it is {state.value}"
        ) from None


def validate_blob_digest(digest: object) -> Digest:
    """Check that ``digest`` is a :class:`Digest` safe to turn into a storage key.

    Backends call this on every digest they are given, even though digests
    are validated when parsed: a ``Digest`` can be built directly with any
    fields, and a path built from ``"../.."`` must never reach a file system.
    Raises :class:`LocalProtocolError` (a caller bug, not a peer's).
    """
    if not isinstance(digest, Digest):
        raise LocalProtocolError(f"a blob store takes Digest values, not {type(digest).__name__}")
    algorithm, encoded = digest.algorithm, digest.hex
    if not isinstance(algorithm, str) or not isinstance(encoded, str):
        raise LocalProtocolError("a digest's algorithm and hex must be strings")
    expected_length = ALGORITHM_HEX_LENGTHS.get(algorithm)
    if expected_length is None:
        raise LocalProtocolError(
            f"digest algorithm {algorithm[:20]!r} is not supported (only sha256 and sha512)"
        )
    if len(encoded) != expected_length or not _LOWER_HEX.issuperset(encoded):
        raise LocalProtocolError(
            f"{algorithm} digest must be {expected_length} lower-case hex characters"
        )
    return digest


class BlobWriter(Protocol):
    """A verified write of one blob, from :meth:`BlobStore.begin_write`.

    The owner calls :meth:`write`, then (optionally :meth:`verify`, then)
    :meth:`commit` or :meth:`abort`; these are not called concurrently with
    each other. :meth:`open_partial` and :attr:`bytes_written` may be used
    from any thread at any time, so readers can follow the download. Used as
    a context manager, the writer is aborted on exit unless it was committed.
    """

    @property
    def digest(self) -> Digest:
        """The digest the content must hash to."""
        ...

    @property
    def bytes_written(self) -> int:
        """How many bytes have been written; readers of the partial content stop here."""
        ...

    @property
    def state(self) -> BlobWriterState:
        """Whether the writer is open, committed or aborted."""
        ...

    def write(self, chunk: bytes | memoryview) -> None:
        """Append ``chunk`` and feed it to the digest verifier.

        On a storage failure the writer is aborted (nothing is published, the
        partial content is removed) and :class:`StorageError` is raised.
        """
        ...

    def open_partial(self) -> BinaryIO:
        """A reader over the content written so far, from its start.

        The caller must not read past :attr:`bytes_written` as it was when it
        last looked: beyond it the content may not be there yet. After a
        commit this reads the published blob.
        """
        ...

    def verify(self, expected_size: int | None = None) -> None:
        """Check that the content written is complete and hashes to :attr:`digest`.

        Cheap (the hash is computed as content is written) and does not touch
        the disk: once it returns, the content may be handed out while
        :meth:`commit` makes it durable. Raises like :meth:`commit`, leaving
        the writer aborted; afterwards :meth:`write` is refused.
        """
        ...

    def commit(self, expected_size: int | None = None) -> BlobInfo:
        """Verify the content and publish it under :attr:`digest`, durably and atomically.

        Raises :class:`DigestMismatchError` if the content does not hash to
        the digest, and :class:`RemoteProtocolError` with ``SIZE_INVALID`` if
        ``expected_size`` is given and differs; either way the writer is
        aborted and nothing is published. If another writer already published
        the same digest, that blob is kept and its info returned.
        """
        ...

    def abort(self) -> None:
        """Discard the content; nothing is published. Idempotent; a no-op after commit."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None: ...


class BlobStore(Protocol):
    """A content-addressed blob store.

    Every method takes a :class:`Digest` and refuses anything else (see
    :func:`validate_blob_digest`). Methods are synchronous and safe to call
    from several threads at once.
    """

    def stat(self, digest: Digest) -> BlobInfo | None:
        """The committed blob's info, or ``None`` if the store does not hold it."""
        ...

    def has(self, digest: Digest) -> bool:
        """Whether a committed blob with this digest is in the store."""
        ...

    def open_read(self, digest: Digest) -> BinaryIO:
        """Open a committed blob for reading; :class:`BlobNotFoundError` if absent.

        The reader sees the whole blob, and keeps seeing it even if the blob
        is deleted while it reads. When the backend keeps local files, the
        returned object has a real ``fileno()`` for ``os.sendfile``.
        """
        ...

    def local_path(self, digest: Digest) -> str | None:
        """The committed blob's local file path, for a zero-copy fast path.

        ``None`` if the blob is absent or the backend keeps no local files
        (an object store); callers must then fall back to :meth:`open_read`.
        """
        ...

    def begin_write(self, digest: Digest) -> BlobWriter:
        """Start a verified write of the blob with this digest.

        Several writers of one digest may run at once (in threads or
        processes); the first to commit publishes it, the others' commits
        return the same info.
        """
        ...

    def delete(self, digest: Digest) -> bool:
        """Remove a committed blob; ``True`` if it was there. Open readers are unaffected."""
        ...

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every committed blob, in no particular order."""
        ...

    def total_size(self) -> int:
        """The size in bytes of all committed blobs, without scanning the store."""
        ...

    def recover(self) -> int:
        """Remove partial content left by writers that died; return how many were removed.

        Partial content of live writers (in this process or another) is kept.
        """
        ...
