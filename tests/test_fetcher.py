"""Single-flight blob fetches and their followers, over a real filesystem store.

The upstream is an in-memory body source scripted per test: paced with
sleeps (on trio's autojump clock), paused before its end, dropped mid-body,
or serving the wrong bytes. Every follower checks, on each chunk it sends,
that it never completes the blob before the blob is committed.
"""

from __future__ import annotations

import contextlib
import errno
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from regcache.core import (
    Digest,
    DigestMismatchError,
    ErrorCode,
    RegcacheError,
    StorageError,
)
from regcache.core import RemoteProtocolError as CoreRemoteProtocolError
from regcache.core._store import BlobInfo
from regcache.engine._fetcher import (
    FOLLOW_CHUNK,
    MAX_RESUMES,
    BlobFetch,
    FetchState,
    follow,
)
from regcache.engine._http import UpstreamProtocolError, UpstreamTimeoutError
from regcache.storage import FilesystemStore

# Wall-clock bound on each test, so that a follower that is never woken fails
# the test instead of hanging the run. trio.fail_after cannot do this here: on
# the autojump clock, a commit running in a worker thread leaves the run loop
# idle and the clock would jump straight to the deadline.
WAIT_SECONDS = 20.0

# Pacing of the scripted upstream, in virtual seconds between chunks.
PACE = 0.01


@contextlib.contextmanager
def wall_clock_limit(seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Cancel the block after ``seconds`` of real time and fail the test."""
    token = trio.lowlevel.current_trio_token()
    finished = threading.Event()
    with trio.CancelScope() as scope:

        def watch() -> None:
            if not finished.wait(seconds):
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(scope.cancel, trio_token=token)

        watchdog = threading.Thread(target=watch, daemon=True)
        watchdog.start()
        try:
            yield
        finally:
            finished.set()
    watchdog.join()
    if scope.cancelled_caught:
        pytest.fail(f"the test did not finish within {seconds} s")


def make_blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@attrs.define(eq=False)
class ScriptedBody:
    """One upstream answer: ``data`` in chunks, maybe dropped or paused before its end."""

    data: bytes
    content_length: int | None
    chunk_size: int
    delay: float
    #: Raise a resumable error once this many bytes of ``data`` went out.
    drop_after: int | None
    #: Wait for this event before answering the end of the body.
    before_eof: trio.Event | None
    at_eof: trio.Event
    #: What to raise instead of the next chunk once ``drop_after`` is reached.
    drop_error: BaseException
    position: int = 0
    closed: bool = False

    async def read_chunk(self) -> bytes:
        assert not self.closed, "read from a closed body"
        if self.delay:
            await trio.sleep(self.delay)
        else:
            await trio.lowlevel.checkpoint()
        end = len(self.data)
        if self.drop_after is not None:
            if self.position >= self.drop_after:
                raise self.drop_error
            end = min(end, self.drop_after)
        chunk = self.data[self.position : min(end, self.position + self.chunk_size)]
        if not chunk:
            self.at_eof.set()
            if self.before_eof is not None:
                await self.before_eof.wait()
        self.position += len(chunk)
        return chunk

    async def aclose(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class ScriptedUpstream:
    """Serves ``content`` from any offset; each answer may drop at the next offset in ``drops``."""

    content: bytes
    content_length: int | None = attrs.field(
        default=attrs.Factory(lambda self: len(self.content), takes_self=True)
    )
    chunk_size: int = 64 * 1024
    delay: float = 0.0
    #: Absolute offsets at which successive answers drop, one per answer.
    drops: list[int] = attrs.Factory(list)
    drop_error: BaseException = attrs.Factory(
        lambda: UpstreamProtocolError("the upstream closed the connection mid-body")
    )
    before_eof: trio.Event | None = None
    at_eof: trio.Event = attrs.Factory(trio.Event)
    #: The offset of every open, in order.
    offsets: list[int] = attrs.Factory(list)
    bodies: list[ScriptedBody] = attrs.Factory(list)

    async def open(self, offset: int) -> ScriptedBody:
        await trio.lowlevel.checkpoint()
        self.offsets.append(offset)
        drop = self.drops.pop(0) if self.drops else None
        body = ScriptedBody(
            data=self.content[offset:],
            content_length=None if self.content_length is None else self.content_length - offset,
            chunk_size=self.chunk_size,
            delay=self.delay,
            drop_after=None if drop is None else drop - offset,
            before_eof=self.before_eof,
            at_eof=self.at_eof,
            drop_error=self.drop_error,
        )
        self.bodies.append(body)
        return body


@attrs.define(eq=False)
class Follower:
    """A client following a fetch; records what it was sent and how it ended."""

    fetch: BlobFetch
    first: int = 0
    received: bytearray = attrs.Factory(bytearray)
    error: RegcacheError | None = None
    finished: bool = False

    async def send(self, chunk: bytes) -> None:
        assert chunk, "follow sent an empty chunk"
        size = self.fetch.size
        assert size is not None
        if self.first + len(self.received) + len(chunk) >= size:
            # The whole blob is about to go out: it must be verified by now.
            assert self.fetch.verified, "the last byte went out before the digest was verified"
        self.received += chunk
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        try:
            await follow(self.fetch, self.send, self.first)
        except RegcacheError as exc:
            self.error = exc
        else:
            self.finished = True


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_root: Path) -> FilesystemStore:
    return FilesystemStore(store_root)


def partial_files(store_root: Path) -> list[Path]:
    return sorted((store_root / "tmp").iterdir())


def stored_content(store: FilesystemStore, digest: Digest) -> bytes:
    with store.open_read(digest) as reader:
        return reader.read()


def state_of(fetch: BlobFetch) -> FetchState:
    """The fetch's state now (mypy would keep an earlier narrowing across awaits)."""
    return fetch.state


async def wait_written(fetch: BlobFetch, count: int) -> None:
    while fetch.written < count and not fetch.done:
        await fetch.wait_for_change()


def assert_nothing_stored(store: FilesystemStore, store_root: Path, digest: Digest) -> None:
    assert store.stat(digest) is None
    assert store.total_size() == 0
    assert partial_files(store_root) == []


# --- success -------------------------------------------------------------------


async def test_one_fetch_feeds_every_follower(
    store: FilesystemStore, store_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(FOLLOW_CHUNK * 2 + 12345)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, delay=PACE)
    fetch = BlobFetch(digest)
    followers = [Follower(fetch) for _ in range(3)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
            await wait_written(fetch, 1)
            assert fetch.followers == 3
    assert fetch.state is FetchState.COMMITTED
    assert fetch.error is None
    for follower in followers:
        assert follower.error is None
        assert follower.finished
        assert bytes(follower.received) == blob
    assert fetch.followers == 0
    assert upstream.offsets == [0]
    assert all(body.closed for body in upstream.bodies)
    assert fetch.size == fetch.written == len(blob)
    assert fetch.info == BlobInfo(digest, len(blob))
    assert store.stat(digest) == BlobInfo(digest, len(blob))
    assert stored_content(store, digest) == blob
    assert partial_files(store_root) == []


async def test_states_move_starting_streaming_verified_committed(
    store: FilesystemStore, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(300_000, seed=1)
    upstream = ScriptedUpstream(blob, delay=PACE)
    fetch = BlobFetch(Digest.of_bytes(blob))
    states = [fetch.state]

    async def watch() -> None:
        while not fetch.done:
            await fetch.wait_for_change()
            if fetch.state is not states[-1]:
                states.append(fetch.state)

    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            nursery.start_soon(fetch.run, store, upstream.open)
            await fetch.wait_started()
            assert fetch.state is FetchState.STREAMING
            assert fetch.size == len(blob)
            await fetch.wait_done()
    assert fetch.verified and fetch.verified_at is not None
    assert states == [
        FetchState.STARTING,
        FetchState.STREAMING,
        FetchState.VERIFIED,
        FetchState.COMMITTED,
    ]


async def test_late_followers_get_everything_from_where_they_ask(
    store: FilesystemStore, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(FOLLOW_CHUNK * 2 + 777, seed=2)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, delay=PACE)
    fetch = BlobFetch(digest)
    late = Follower(fetch)
    late_from_offset = Follower(fetch, first=FOLLOW_CHUNK + 5)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch.run, store, upstream.open)
            # Joined well after the start: more than a follow chunk is
            # already on disk and must be read back from the partial file.
            await wait_written(fetch, FOLLOW_CHUNK + FOLLOW_CHUNK // 2)
            assert fetch.state is FetchState.STREAMING
            nursery.start_soon(late.run)
            nursery.start_soon(late_from_offset.run)
        after_commit = Follower(fetch)
        await after_commit.run()
    assert state_of(fetch) is FetchState.COMMITTED
    assert late.finished
    assert bytes(late.received) == blob
    assert late_from_offset.finished
    assert bytes(late_from_offset.received) == blob[FOLLOW_CHUNK + 5 :]
    assert after_commit.finished
    assert bytes(after_commit.received) == blob


@pytest.mark.parametrize("size", [1, 2, 200_001])
async def test_last_byte_is_held_back_until_verified(store: FilesystemStore, size: int) -> None:
    blob = make_blob(size, seed=3)
    digest = Digest.of_bytes(blob)
    release = trio.Event()
    upstream = ScriptedUpstream(blob, chunk_size=50_000, before_eof=release)
    fetch = BlobFetch(digest)
    followers = [Follower(fetch), Follower(fetch, first=size - 1)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
            # Every byte is written; the upstream has not yet said it is done.
            await upstream.at_eof.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.written == size
            assert fetch.state is FetchState.STREAMING
            assert store.stat(digest) is None
            assert bytes(followers[0].received) == blob[:-1]
            assert followers[1].received == b""
            release.set()
    assert state_of(fetch) is FetchState.COMMITTED
    assert bytes(followers[0].received) == blob
    assert bytes(followers[1].received) == blob[-1:]


async def test_verified_bytes_go_out_even_if_the_commit_fails(
    store: FilesystemStore,
    store_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The disk fails while the verified blob is made durable: the clients
    # still get every (correct) byte, and the cache keeps nothing.
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr("regcache.storage._filesystem.os.fsync", failing_fsync)
    blob = make_blob(FOLLOW_CHUNK + 4321, seed=8)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, delay=PACE)
    fetch = BlobFetch(digest)
    followers = [Follower(fetch), Follower(fetch, first=100)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert state_of(fetch) is FetchState.FAILED
    assert fetch.verified
    assert isinstance(fetch.error, StorageError)
    for follower in followers:
        assert follower.error is None
        assert follower.finished
        assert bytes(follower.received) == blob[follower.first :]
    assert_nothing_stored(store, store_root, digest)


async def test_empty_blob_commits_and_follows(store: FilesystemStore, store_root: Path) -> None:
    digest = Digest.of_bytes(b"")
    upstream = ScriptedUpstream(b"")
    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.COMMITTED
    assert follower.finished
    assert follower.received == b""
    assert store.stat(digest) == BlobInfo(digest, 0)
    assert partial_files(store_root) == []


async def test_size_less_upstream_commits(store: FilesystemStore) -> None:
    blob = make_blob(100_000, seed=4)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, content_length=None, chunk_size=8192)
    fetch = BlobFetch(digest)
    with wall_clock_limit():
        await fetch.run(store, upstream.open)
    assert fetch.state is FetchState.COMMITTED
    assert fetch.size is None
    assert fetch.info == BlobInfo(digest, len(blob))
    assert stored_content(store, digest) == blob


# --- bad content ----------------------------------------------------------------


async def test_digest_mismatch_fails_and_stores_nothing(
    store: FilesystemStore, store_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(500_000, seed=5)
    digest = Digest.of_bytes(blob)
    wrong = bytearray(blob)
    wrong[250_000] ^= 0xFF
    upstream = ScriptedUpstream(bytes(wrong), delay=PACE)
    fetch = BlobFetch(digest)
    followers = [Follower(fetch) for _ in range(2)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
        joined_after = Follower(fetch)
        await joined_after.run()
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, DigestMismatchError)
    assert fetch.error.expected == str(digest)
    assert fetch.written == len(blob)
    assert fetch.info is None
    for follower in [*followers, joined_after]:
        assert not follower.finished
        assert follower.error is fetch.error
        assert len(follower.received) < len(blob)
        assert bytes(follower.received) == bytes(wrong[: len(follower.received)])
    assert joined_after.received == b""
    assert fetch.followers == 0
    assert all(body.closed for body in upstream.bodies)
    assert_nothing_stored(store, store_root, digest)


async def test_body_shorter_than_its_content_length_fails(
    store: FilesystemStore, store_root: Path
) -> None:
    blob = make_blob(200_000, seed=6)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob[:-100], content_length=len(blob), chunk_size=30_000)
    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, CoreRemoteProtocolError)
    assert not isinstance(fetch.error, DigestMismatchError)
    assert fetch.error.code is ErrorCode.UPSTREAM_ERROR
    assert fetch.error.status == 502
    assert f"{len(blob) - 100} bytes" in str(fetch.error)
    assert follower.error is fetch.error
    assert bytes(follower.received) == blob[: len(follower.received)]
    # An ended body is not a dropped connection: no resume was tried.
    assert upstream.offsets == [0]
    assert_nothing_stored(store, store_root, digest)


async def test_body_longer_than_its_content_length_fails(
    store: FilesystemStore, store_root: Path
) -> None:
    blob = make_blob(200_000, seed=7)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob + b"trailing", content_length=len(blob), chunk_size=30_000)
    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, CoreRemoteProtocolError)
    assert not isinstance(fetch.error, DigestMismatchError)
    assert fetch.error.code is ErrorCode.UPSTREAM_ERROR
    assert f"more than the {len(blob)} bytes" in str(fetch.error)
    assert follower.error is fetch.error
    assert len(follower.received) < len(blob)
    assert_nothing_stored(store, store_root, digest)


# --- upstream failures ------------------------------------------------------------


@pytest.mark.parametrize(
    "drops",
    [
        [100_003],
        [100_003, 250_000],
        [FOLLOW_CHUNK // 3 * (n + 1) + n for n in range(MAX_RESUMES)],
    ],
    ids=["one", "two", "max"],
)
async def test_dropped_body_is_resumed_from_where_it_stopped(
    store: FilesystemStore,
    store_root: Path,
    autojump_clock: trio.testing.MockClock,
    drops: list[int],
) -> None:
    blob = make_blob(FOLLOW_CHUNK + 300_000, seed=8)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, delay=PACE, drops=list(drops))
    fetch = BlobFetch(digest)
    followers = [Follower(fetch) for _ in range(2)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.COMMITTED, fetch.error
    assert upstream.offsets == [0, *drops]
    assert all(body.closed for body in upstream.bodies)
    for follower in followers:
        assert follower.finished
        assert bytes(follower.received) == blob
    assert stored_content(store, digest) == blob
    assert partial_files(store_root) == []


async def test_timed_out_body_is_resumed(store: FilesystemStore) -> None:
    blob = make_blob(100_000, seed=9)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(
        blob,
        chunk_size=10_000,
        drops=[45_000],
        drop_error=UpstreamTimeoutError("the upstream stopped sending"),
    )
    fetch = BlobFetch(digest)
    with wall_clock_limit():
        await fetch.run(store, upstream.open)
    assert fetch.state is FetchState.COMMITTED, fetch.error
    assert upstream.offsets == [0, 45_000]
    assert stored_content(store, digest) == blob


async def test_more_drops_than_resumes_fail(
    store: FilesystemStore, store_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(400_000, seed=10)
    digest = Digest.of_bytes(blob)
    drops = [50_000 * (n + 1) for n in range(MAX_RESUMES + 1)]
    upstream = ScriptedUpstream(blob, chunk_size=16_384, delay=PACE, drops=list(drops))
    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.FAILED
    assert "closed the connection mid-body" in str(fetch.error)
    assert upstream.offsets == [0, *drops[:-1]]
    assert all(body.closed for body in upstream.bodies)
    assert follower.error is fetch.error
    assert bytes(follower.received) == blob[: drops[-1]]
    assert_nothing_stored(store, store_root, digest)


async def test_drop_without_a_size_is_not_resumed(store: FilesystemStore, store_root: Path) -> None:
    blob = make_blob(100_000, seed=11)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, content_length=None, chunk_size=10_000, drops=[30_000])
    fetch = BlobFetch(digest)
    with wall_clock_limit():
        await fetch.run(store, upstream.open)
    assert fetch.state is FetchState.FAILED
    assert "closed the connection mid-body" in str(fetch.error)
    assert upstream.offsets == [0]
    assert_nothing_stored(store, store_root, digest)


async def test_refused_upstream_fails_before_streaming(
    store: FilesystemStore, store_root: Path
) -> None:
    digest = Digest.of_bytes(b"never served")
    refusal = CoreRemoteProtocolError(ErrorCode.BLOB_UNKNOWN, "no such blob upstream")
    opened = trio.Event()
    release = trio.Event()

    async def open_upstream(offset: int) -> ScriptedBody:
        opened.set()
        await release.wait()
        raise refusal

    fetch = BlobFetch(digest)
    followers = [Follower(fetch) for _ in range(2)]
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            for follower in followers:
                nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, open_upstream)
            await opened.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.state is FetchState.STARTING
            release.set()
    assert state_of(fetch) is FetchState.FAILED
    assert fetch.error is refusal
    for follower in followers:
        assert follower.error is refusal
        assert follower.received == b""
    assert_nothing_stored(store, store_root, digest)


async def test_unexpected_exception_still_releases_followers(
    store: FilesystemStore, store_root: Path
) -> None:
    blob = make_blob(100_000, seed=12)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(
        blob, chunk_size=10_000, drops=[20_000], drop_error=ValueError("a bug")
    )
    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower.run)
            nursery.start_soon(fetch.run, store, upstream.open)
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, CoreRemoteProtocolError)
    assert fetch.error.code is ErrorCode.UNKNOWN
    assert follower.error is fetch.error
    assert_nothing_stored(store, store_root, digest)


# --- cancellation ---------------------------------------------------------------------


async def test_cancelled_follower_leaves_the_fetch_and_others_alone(
    store: FilesystemStore, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(FOLLOW_CHUNK + 100_000, seed=13)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, chunk_size=32_768, delay=PACE)
    fetch = BlobFetch(digest)
    leaving = Follower(fetch)
    staying = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as nursery:
            leaving_scope = trio.CancelScope()

            async def run_leaving() -> None:
                with leaving_scope:
                    await leaving.run()

            nursery.start_soon(run_leaving)
            nursery.start_soon(staying.run)
            nursery.start_soon(fetch.run, store, upstream.open)
            while len(leaving.received) < 200_000:
                await fetch.wait_for_change()
            assert fetch.followers == 2
            leaving_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert fetch.followers == 1
            assert fetch.state is FetchState.STREAMING
    assert leaving_scope.cancelled_caught
    assert not leaving.finished
    assert leaving.error is None
    assert 200_000 <= len(leaving.received) < len(blob)
    assert state_of(fetch) is FetchState.COMMITTED
    assert staying.finished
    assert bytes(staying.received) == blob
    assert fetch.followers == 0
    assert stored_content(store, digest) == blob


async def test_cancelled_fetch_stores_nothing_and_fails_followers(
    store: FilesystemStore, store_root: Path, autojump_clock: trio.testing.MockClock
) -> None:
    blob = make_blob(FOLLOW_CHUNK, seed=14)
    digest = Digest.of_bytes(blob)
    upstream = ScriptedUpstream(blob, chunk_size=32_768, delay=PACE)
    fetch = BlobFetch(digest)
    followers = [Follower(fetch) for _ in range(2)]
    with wall_clock_limit():
        async with trio.open_nursery() as clients:
            for follower in followers:
                clients.start_soon(follower.run)
            async with trio.open_nursery() as engine:
                engine.start_soon(fetch.run, store, upstream.open)
                await wait_written(fetch, 300_000)
                assert partial_files(store_root) != []
                engine.cancel_scope.cancel()
            assert engine.cancel_scope.cancelled_caught
        late = Follower(fetch)
        await late.run()
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, CoreRemoteProtocolError)
    assert fetch.error.code is ErrorCode.UNAVAILABLE
    assert fetch.error.status == 503
    for follower in [*followers, late]:
        assert follower.error is fetch.error
        assert not follower.finished
        assert len(follower.received) < len(blob)
    assert all(body.closed for body in upstream.bodies)
    assert_nothing_stored(store, store_root, digest)


async def test_fetch_cancelled_inside_a_nursery_still_fails_followers(
    store: FilesystemStore, store_root: Path
) -> None:
    # An upstream connect runs attempts in a nursery: cancelling it there
    # raises an exception group, not a bare Cancelled.
    digest = Digest.of_bytes(b"never served")
    connecting = trio.Event()

    async def open_upstream(offset: int) -> ScriptedBody:
        async with trio.open_nursery() as attempts:
            attempts.start_soon(trio.sleep_forever)
            attempts.start_soon(trio.sleep_forever)
            connecting.set()
        raise AssertionError("unreachable")

    fetch = BlobFetch(digest)
    follower = Follower(fetch)
    with wall_clock_limit():
        async with trio.open_nursery() as clients:
            clients.start_soon(follower.run)
            async with trio.open_nursery() as engine:
                engine.start_soon(fetch.run, store, open_upstream)
                await connecting.wait()
                engine.cancel_scope.cancel()
    assert fetch.state is FetchState.FAILED
    assert isinstance(fetch.error, CoreRemoteProtocolError)
    assert fetch.error.code is ErrorCode.UNAVAILABLE
    assert follower.error is fetch.error
    assert_nothing_stored(store, store_root, digest)
