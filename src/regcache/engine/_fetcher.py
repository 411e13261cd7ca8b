"""Single-flight blob fetches that any number of clients follow while they run.

One upstream fetch per blob digest at a time. The fetch writes into a partial
file in the store; every client asking for that blob meanwhile follows the
partial file, reading what has been written so far and then waiting for more.
The last byte is held back from every follower until the digest is verified:
a client never receives a complete response whose content does not match its
digest. On failure the followers' connections are cut short instead. The
commit that makes the blob durable runs after the followers are released.

The fetch runs in the engine's own nursery, not in a request's, so a client
that disconnects does not stop it for the others (nor for the cache).
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO, Protocol

import attrs
import trio

from regcache.core import Digest, ErrorCode, RegcacheError, RemoteProtocolError
from regcache.core._store import BlobInfo, BlobStore, BlobWriter

from ._http import UpstreamProtocolError, UpstreamTimeoutError

log = logging.getLogger("regcache.engine")

#: How much a follower reads from the partial file per send. Large enough that
#: the per-chunk Python work is noise next to the copy.
FOLLOW_CHUNK = 1024 * 1024

#: How many times an upstream connection that drops mid-blob is resumed with
#: a Range request before the fetch fails. Bounded so a flapping upstream
#: cannot keep a fetch (and its followers) alive forever.
MAX_RESUMES = 3


class BodySource(Protocol):
    """An upstream response body, as the fetcher needs it."""

    @property
    def content_length(self) -> int | None: ...

    async def read_chunk(self) -> bytes | memoryview:
        """The next piece; empty at the end. A view is valid until the next call."""
        ...

    async def aclose(self) -> None: ...


#: Opens the upstream blob from a byte offset (0: the whole blob; otherwise a
#: Range request whose answer must start exactly there).
OpenUpstream = Callable[[int], Awaitable[BodySource]]


class FetchState(enum.Enum):
    """Where a fetch is. Transitions only move forward, see ``_NEXT``."""

    STARTING = "starting"
    STREAMING = "streaming"
    #: Every byte received and the digest verified; being made durable.
    VERIFIED = "verified"
    COMMITTED = "committed"
    FAILED = "failed"


_NEXT: dict[FetchState, frozenset[FetchState]] = {
    FetchState.STARTING: frozenset({FetchState.STREAMING, FetchState.FAILED}),
    FetchState.STREAMING: frozenset({FetchState.VERIFIED, FetchState.FAILED}),
    FetchState.VERIFIED: frozenset({FetchState.COMMITTED, FetchState.FAILED}),
    FetchState.COMMITTED: frozenset(),
    FetchState.FAILED: frozenset(),
}


class ResumableError(RegcacheError):
    """Marks an upstream failure mid-body after which a Range resume may work."""

    def __init__(self, cause: RegcacheError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@attrs.define(eq=False)
class BlobFetch:
    """One in-flight upstream fetch of a blob, followed by any number of clients."""

    digest: Digest
    #: Who the fetch runs for: (registry, repository, principal). Another
    #: requester must have its own access confirmed before it may follow.
    owner: tuple[str, str, str] = ("", "", "")
    state: FetchState = FetchState.STARTING
    #: The blob's size, once the upstream said it (Content-Length).
    size: int | None = None
    #: Bytes written to the partial file so far.
    written: int = 0
    error: RegcacheError | None = None
    info: BlobInfo | None = None
    #: How many clients are following (for logs: "joined in-flight").
    followers: int = 0
    #: The wall clock, read once: when the content was verified (and so
    #: went out whole to the clients following it).
    clock: Callable[[], float] = attrs.field(default=time.time, repr=False)
    verified_at: float | None = None
    _writer: BlobWriter | None = None
    _verified: bool = False
    _progress: trio.Event = attrs.field(factory=trio.Event)

    def _move(self, state: FetchState) -> None:
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"fetch of {self.digest}: {self.state} -> {state} is not allowed")
        self.state = state
        self._notify()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def wait_for_change(self) -> None:
        """Sleep until the fetch wrote more bytes or changed state."""
        await self._progress.wait()

    @property
    def done(self) -> bool:
        """Whether the fetch has ended, for better or worse."""
        return self.state in (FetchState.COMMITTED, FetchState.FAILED)

    @property
    def verified(self) -> bool:
        """Whether every byte is in the partial file and matched the digest.

        Stays true if the commit fails afterwards: the bytes are still right.
        """
        return self._verified

    def raise_if_failed(self) -> None:
        """Raise the fetch's error if it failed."""
        if self.state is FetchState.FAILED:
            assert self.error is not None
            raise self.error

    async def wait_started(self) -> None:
        """Wait until the size is known, or the fetch ended."""
        while self.state is FetchState.STARTING:
            await self.wait_for_change()

    async def wait_done(self) -> None:
        """Wait until the fetch committed or failed."""
        while not self.done:
            await self.wait_for_change()

    def open_partial(self) -> BinaryIO:
        """A reader over the partial file (valid while streaming and after)."""
        if self._writer is None:
            raise RuntimeError("the fetch has not started writing")
        return self._writer.open_partial()

    async def run(self, store: BlobStore, open_upstream: OpenUpstream) -> None:
        """Fetch the blob into the store; never raises except on cancellation."""
        try:
            await self._fetch(store, open_upstream)
        except RegcacheError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug must still release the followers
            log.exception("fetch of %s failed unexpectedly", self.digest)
            self._fail(RemoteProtocolError(ErrorCode.UNKNOWN, f"internal error: {exc}"))
        finally:
            # Cancellation (shutdown) may arrive bare or inside an exception
            # group from a nursery below; either way nothing partial stays.
            if not self.done:
                self._fail(RemoteProtocolError(ErrorCode.UNAVAILABLE, "regcache is shutting down"))

    def _fail(self, error: RegcacheError) -> None:
        if self._writer is not None:
            self._writer.abort()
        self.error = error
        if not self.done:
            self._move(FetchState.FAILED)

    async def _fetch(self, store: BlobStore, open_upstream: OpenUpstream) -> None:
        body = await open_upstream(0)
        try:
            self.size = body.content_length
            self._writer = store.begin_write(self.digest)
            self._move(FetchState.STREAMING)
            resumes = 0
            while True:
                try:
                    await self._copy(body)
                    break
                except ResumableError as exc:
                    if resumes >= MAX_RESUMES or self.size is None:
                        # Give up with the upstream's own error (502/504).
                        raise exc.cause from None
                    resumes += 1
                    log.warning(
                        "upstream dropped %s at byte %d (%s); resuming (%d of %d)",
                        self.digest,
                        self.written,
                        exc,
                        resumes,
                        MAX_RESUMES,
                    )
                    await body.aclose()
                    body = await open_upstream(self.written)
        finally:
            await body.aclose()
        if self.size is not None and self.written != self.size:
            raise RemoteProtocolError(
                ErrorCode.UPSTREAM_ERROR,
                f"upstream sent {self.written} bytes of {self.digest}, expected {self.size}",
            )
        writer = self._writer
        assert writer is not None
        # The hash was computed as the bytes arrived, so verifying is cheap;
        # once it passed, followers may have the last byte while the commit
        # (fsyncs and a rename, which may block on the disk, hence a worker
        # thread) makes the blob durable. Should the commit fail, the clients
        # still got exactly the right bytes; the cache just does not keep them.
        writer.verify(self.size)
        self._verified = True
        self.verified_at = self.clock()
        self._move(FetchState.VERIFIED)
        self.info = await trio.to_thread.run_sync(writer.commit, self.size)
        self._move(FetchState.COMMITTED)

    async def _copy(self, body: BodySource) -> None:
        writer = self._writer
        assert writer is not None
        while True:
            try:
                chunk = await body.read_chunk()
            except (UpstreamProtocolError, UpstreamTimeoutError) as exc:
                raise ResumableError(exc) from exc
            if not chunk:
                return
            writer.write(chunk)
            self.written += len(chunk)
            if self.size is not None and self.written > self.size:
                raise RemoteProtocolError(
                    ErrorCode.UPSTREAM_ERROR,
                    f"upstream sent more than the {self.size} bytes it announced for {self.digest}",
                )
            self._notify()


#: Sends ``count`` bytes of the open file ``fd`` from ``offset``: with
#: os.sendfile on a plain socket, by pread and copy otherwise.
SpanSender = Callable[[int, int, int], Awaitable[None]]


async def follow_spans(fetch: BlobFetch, send_span: SpanSender, first: int = 0) -> None:
    """Hand the fetched blob from byte ``first`` to its end to ``send_span`` in file spans.

    Holds the last byte back until the digest is verified; raises the fetch's
    error (after handing over all but the last byte at most) if it fails.
    """
    await fetch.wait_started()
    fetch.raise_if_failed()
    size = fetch.size
    assert size is not None
    fetch.followers += 1
    reader = fetch.open_partial()
    try:
        fd = reader.fileno()
        position = first
        while True:
            # Everything written may go out, except the last byte before the
            # digest is verified: that is what keeps bad content incomplete.
            # Verified bytes go out even if the commit fails after.
            complete = fetch.verified
            if not complete:
                fetch.raise_if_failed()
            readable = size if complete else min(fetch.written, size - 1)
            if position < readable:
                await send_span(fd, position, readable - position)
                position = readable
            elif complete:
                return
            else:
                # No await since `complete` and `readable` were read, so no
                # progress can have been missed.
                await fetch.wait_for_change()
    finally:
        fetch.followers -= 1
        reader.close()


async def follow(
    fetch: BlobFetch, send: Callable[[bytes], Awaitable[None]], first: int = 0
) -> None:
    """Like :func:`follow_spans`, sending the bytes through ``send`` in chunks."""

    async def copy(fd: int, offset: int, count: int) -> None:
        while count > 0:
            chunk = os.pread(fd, min(FOLLOW_CHUNK, count), offset)
            if not chunk:
                raise RemoteProtocolError(ErrorCode.UNKNOWN, "the partial blob file shrank")
            await send(chunk)
            offset += len(chunk)
            count -= len(chunk)

    await follow_spans(fetch, copy, first)
