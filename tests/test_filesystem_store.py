"""The filesystem blob store: round trips, atomic publication, crashes, full disks.

Driver-level tests: real files, threads, child processes and signals. Every
wait on a thread or a child is bounded.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regcache.core import (
    ALGORITHM_HEX_LENGTHS,
    Digest,
    DigestMismatchError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StorageError,
)
from regcache.core._store import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobWriterEvent,
    BlobWriterState,
    next_writer_state,
    validate_blob_digest,
)
from regcache.storage import FilesystemStore

# Bound on every wait for a thread or a child process: generous for a loaded
# CI machine, short enough that a hang fails the test instead of the run.
WAIT_SECONDS = 20.0

CHUNK = 64 * 1024


def make_content(seed: int, size: int) -> bytes:
    """Deterministic, seed-specific content of ``size`` bytes."""
    block = hashlib.sha512(seed.to_bytes(4, "big")).digest()
    return (block * (size // len(block) + 1))[:size]


def write_all(writer_store: FilesystemStore, content: bytes) -> BlobInfo:
    digest = Digest.of_bytes(content)
    with writer_store.begin_write(digest) as writer:
        for offset in range(0, len(content), CHUNK):
            writer.write(content[offset : offset + CHUNK])
        return writer.commit(len(content))


def read_blob(store: FilesystemStore, digest: Digest) -> bytes:
    with store.open_read(digest) as reader:
        return reader.read()


def tmp_entries(root: Path) -> list[str]:
    return sorted(os.listdir(root / "tmp"))


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> FilesystemStore:
    return FilesystemStore(root)


# -- child processes -----------------------------------------------------------

# A child that opens the store, writes the whole blob (or half of it), says
# "ready" and waits for a line on stdin; on "commit" it commits.
WRITER_CHILD = r"""
import hashlib, sys
from regcache.core import Digest
from regcache.storage import FilesystemStore

root, how_much = sys.argv[1], sys.argv[2]
block = hashlib.sha512((7).to_bytes(4, "big")).digest()
size = 1024 * 1024
content = (block * (size // len(block) + 1))[:size]
digest = Digest.of_bytes(content)
store = FilesystemStore(root)
writer = store.begin_write(digest)
end = len(content) // 2 if how_much == "half" else len(content)
for offset in range(0, end, 65536):
    writer.write(content[offset : min(offset + 65536, end)])
print("ready", flush=True)
if sys.stdin.readline().strip() == "commit":
    info = writer.commit(len(content))
    print(f"committed {info.size}", flush=True)
"""
CHILD_CONTENT = make_content(7, 1024 * 1024)

# A child whose files may not grow past 256 KiB (RLIMIT_FSIZE), with SIGXFSZ
# ignored so that the kernel answers the write with EFBIG instead of killing it.
FILE_SIZE_LIMIT_CHILD = r"""
import resource, signal, sys
from regcache.core import Digest, StorageError
from regcache.storage import FilesystemStore

root = sys.argv[1]
content = bytes(range(256)) * 4096
digest = Digest.of_bytes(content)
store = FilesystemStore(root)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
writer = store.begin_write(digest)
try:
    for offset in range(0, len(content), 65536):
        writer.write(content[offset : offset + 65536])
    writer.commit(len(content))
except StorageError as exc:
    print(f"state={writer.state.value}", flush=True)
    print(f"error={exc}", flush=True)
else:
    print("committed", flush=True)
"""


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=WAIT_SECONDS)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def start_child(
    children: list[subprocess.Popen[bytes]], script: str, *args: str
) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    children.append(child)
    return child


def read_line(child: subprocess.Popen[bytes]) -> str:
    """One line of the child's stdout, waiting at most WAIT_SECONDS."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    deadline = time.monotonic() + WAIT_SECONDS
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"child said only {line!r} in {WAIT_SECONDS}s"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            byte = os.read(fd, 1)
            if not byte:
                child.kill()
                assert child.stderr is not None
                raise AssertionError(f"child ended early: {line!r} {child.stderr.read()!r}")
            line += byte
    return line.decode().strip()


def finish(child: subprocess.Popen[bytes]) -> None:
    assert child.wait(timeout=WAIT_SECONDS) == 0, child.stderr.read() if child.stderr else ""


# -- round trips -----------------------------------------------------------------


def test_write_commit_read_round_trip(store: FilesystemStore, root: Path) -> None:
    content = make_content(1, 300_000)
    digest = Digest.of_bytes(content)
    assert not store.has(digest)
    assert store.stat(digest) is None
    assert store.local_path(digest) is None

    writer = store.begin_write(digest)
    assert writer.digest == digest
    assert writer.state.value == "open"
    writer.write(content[:1000])
    writer.write(memoryview(content)[1000:])
    assert writer.bytes_written == len(content)
    assert not store.has(digest)  # nothing visible before the commit
    info = writer.commit(len(content))

    assert info == BlobInfo(digest, len(content))
    assert writer.state is BlobWriterState.COMMITTED
    assert store.has(digest)
    assert store.stat(digest) == info
    assert read_blob(store, digest) == content
    path = store.local_path(digest)
    assert path == str(root / "blobs" / "sha256" / digest.hex[:2] / digest.hex)
    assert Path(path).read_bytes() == content
    assert tmp_entries(root) == []
    assert store.total_size() == len(content)


def test_sha512_and_empty_blobs(store: FilesystemStore) -> None:
    content = make_content(2, 5000)
    digest = Digest.of_bytes(content, "sha512")
    with store.begin_write(digest) as writer:
        writer.write(content)
        assert writer.commit() == BlobInfo(digest, 5000)
    empty = Digest.of_bytes(b"")
    with store.begin_write(empty) as writer:
        assert writer.commit(0) == BlobInfo(empty, 0)
    assert read_blob(store, digest) == content
    assert read_blob(store, empty) == b""
    assert store.total_size() == 5000


def test_open_read_gives_a_real_file_that_survives_delete(store: FilesystemStore) -> None:
    content = make_content(3, 100_000)
    info = write_all(store, content)
    with store.open_read(info.digest) as reader:
        assert os.fstat(reader.fileno()).st_size == len(content)
        head = reader.read(10)
        assert store.delete(info.digest)
        assert head + reader.read() == content
    assert not store.has(info.digest)


def test_open_read_of_absent_blob(store: FilesystemStore) -> None:
    digest = Digest.of_bytes(b"absent")
    with pytest.raises(BlobNotFoundError) as caught:
        store.open_read(digest)
    assert isinstance(caught.value, StorageError)
    assert caught.value.digest == digest
    assert str(digest) in str(caught.value)


def test_the_store_satisfies_the_protocol(root: Path) -> None:
    store: BlobStore = FilesystemStore(root)
    assert store.recover() == 0
    assert list(store.iter_blobs()) == []


# -- refusals: digest, size, state -------------------------------------------------


def test_digest_mismatch_publishes_nothing(store: FilesystemStore, root: Path) -> None:
    claimed = Digest.of_bytes(b"what was announced")
    writer = store.begin_write(claimed)
    writer.write(b"what arrived instead")
    with pytest.raises(DigestMismatchError) as caught:
        writer.commit()
    assert caught.value.expected == str(claimed)
    assert caught.value.actual == str(Digest.of_bytes(b"what arrived instead"))
    assert writer.state is BlobWriterState.ABORTED
    assert not store.has(claimed)
    assert tmp_entries(root) == []
    assert blob_files(root) == []
    assert store.total_size() == 0


def test_size_mismatch_publishes_nothing(store: FilesystemStore, root: Path) -> None:
    content = make_content(4, 1000)
    digest = Digest.of_bytes(content)
    writer = store.begin_write(digest)
    writer.write(content)
    with pytest.raises(RemoteProtocolError) as caught:
        writer.commit(expected_size=1001)
    assert caught.value.code is ErrorCode.SIZE_INVALID
    assert caught.value.detail == {"expected": 1001, "actual": 1000}
    assert writer.state is BlobWriterState.ABORTED
    assert not store.has(digest)
    assert tmp_entries(root) == []


def test_verified_content_is_readable_before_it_is_committed(
    store: FilesystemStore, root: Path
) -> None:
    content = make_content(6, 300_000)
    digest = Digest.of_bytes(content)
    writer = store.begin_write(digest)
    writer.write(content)
    writer.verify(expected_size=len(content))
    assert writer.state is BlobWriterState.VERIFIED
    assert not store.has(digest)
    with writer.open_partial() as reader:
        assert reader.read() == content
    with pytest.raises(LocalProtocolError, match="verified"):
        writer.write(b"more")
    assert writer.commit(expected_size=len(content)) == BlobInfo(digest, len(content))
    assert read_blob(store, digest) == content
    assert tmp_entries(root) == []


@pytest.mark.parametrize("arrived", [b"what arrived instead", b"what was announced!"])
def test_verify_refuses_wrong_content_and_publishes_nothing(
    store: FilesystemStore, root: Path, arrived: bytes
) -> None:
    claimed = Digest.of_bytes(b"what was announced")
    writer = store.begin_write(claimed)
    writer.write(arrived)
    with pytest.raises(DigestMismatchError):
        writer.verify(expected_size=len(b"what was announced"))
    assert writer.state is BlobWriterState.ABORTED
    assert tmp_entries(root) == []
    assert not store.has(claimed)


def test_abort_after_verify_removes_the_content(store: FilesystemStore, root: Path) -> None:
    content = make_content(7, 1000)
    writer = store.begin_write(Digest.of_bytes(content))
    writer.write(content)
    writer.verify()
    writer.abort()
    assert writer.state is BlobWriterState.ABORTED
    assert tmp_entries(root) == []
    assert blob_files(root) == []
    assert store.total_size() == 0


def test_abort_is_idempotent_and_final(store: FilesystemStore, root: Path) -> None:
    content = make_content(5, 1000)
    writer = store.begin_write(Digest.of_bytes(content))
    writer.write(content)
    assert len(tmp_entries(root)) == 1
    writer.abort()
    writer.abort()
    assert writer.state is BlobWriterState.ABORTED
    assert tmp_entries(root) == []
    assert not store.has(writer.digest)
    with pytest.raises(LocalProtocolError):
        writer.write(b"more")
    with pytest.raises(LocalProtocolError):
        writer.commit()
    with pytest.raises(StorageError, match="aborted"):
        writer.open_partial()


def test_context_manager_aborts_on_exception(store: FilesystemStore, root: Path) -> None:
    content = make_content(6, 1000)
    digest = Digest.of_bytes(content)
    with pytest.raises(RuntimeError), store.begin_write(digest) as writer:
        writer.write(content)
        raise RuntimeError("the upstream went away")
    assert writer.state is BlobWriterState.ABORTED
    assert not store.has(digest)
    assert tmp_entries(root) == []


def test_context_manager_keeps_a_committed_blob(store: FilesystemStore) -> None:
    content = make_content(7, 1000)
    with store.begin_write(Digest.of_bytes(content)) as writer:
        writer.write(content)
        info = writer.commit()
    writer.abort()
    assert writer.state is BlobWriterState.COMMITTED
    assert read_blob(store, info.digest) == content


def test_committed_writer_refuses_more(store: FilesystemStore) -> None:
    content = make_content(8, 1000)
    with store.begin_write(Digest.of_bytes(content)) as writer:
        writer.write(content)
        writer.commit()
        with pytest.raises(LocalProtocolError, match="committed"):
            writer.write(b"x")
        with pytest.raises(LocalProtocolError, match="committed"):
            writer.commit()
    assert read_blob(store, writer.digest) == content


def test_writer_state_table() -> None:
    digest = Digest.of_bytes(b"")
    open_, verified, committed, aborted = (
        BlobWriterState.OPEN,
        BlobWriterState.VERIFIED,
        BlobWriterState.COMMITTED,
        BlobWriterState.ABORTED,
    )
    assert next_writer_state(open_, BlobWriterEvent.WRITE, digest) is open_
    assert next_writer_state(open_, BlobWriterEvent.VERIFY, digest) is verified
    assert next_writer_state(open_, BlobWriterEvent.COMMIT, digest) is committed
    assert next_writer_state(open_, BlobWriterEvent.ABORT, digest) is aborted
    assert next_writer_state(verified, BlobWriterEvent.OPEN_PARTIAL, digest) is verified
    assert next_writer_state(verified, BlobWriterEvent.COMMIT, digest) is committed
    assert next_writer_state(verified, BlobWriterEvent.ABORT, digest) is aborted
    assert next_writer_state(committed, BlobWriterEvent.ABORT, digest) is committed
    assert next_writer_state(committed, BlobWriterEvent.OPEN_PARTIAL, digest) is committed
    assert next_writer_state(aborted, BlobWriterEvent.ABORT, digest) is aborted
    for state, event in [
        (verified, BlobWriterEvent.WRITE),
        (verified, BlobWriterEvent.VERIFY),
        (committed, BlobWriterEvent.VERIFY),
        (aborted, BlobWriterEvent.VERIFY),
        (committed, BlobWriterEvent.WRITE),
        (committed, BlobWriterEvent.COMMIT),
        (aborted, BlobWriterEvent.WRITE),
        (aborted, BlobWriterEvent.COMMIT),
        (aborted, BlobWriterEvent.OPEN_PARTIAL),
    ]:
        with pytest.raises(LocalProtocolError, match=state.value):
            next_writer_state(state, event, digest)


# -- partial content ---------------------------------------------------------------


def test_open_partial_follows_the_bytes_written(store: FilesystemStore) -> None:
    content = make_content(9, 200_000)
    digest = Digest.of_bytes(content)
    with store.begin_write(digest) as writer:
        writer.write(content[:70_000])
        with writer.open_partial() as follower:
            assert follower.read(writer.bytes_written) == content[:70_000]
            writer.write(content[70_000:150_000])
            assert follower.read(writer.bytes_written - 70_000) == content[70_000:150_000]
            writer.write(content[150_000:])
            writer.commit()
            # Its file was published under the blob's name; the follower reads on.
            assert follower.read() == content[150_000:]
        # A follower that comes after the commit reads the published blob.
        with writer.open_partial() as late_follower:
            assert late_follower.read() == content


def test_follower_keeps_its_bytes_when_the_writer_aborts(store: FilesystemStore) -> None:
    with store.begin_write(Digest.of_bytes(b"never complete")) as writer:
        writer.write(b"never")
        with writer.open_partial() as follower:
            writer.abort()
            assert follower.read(writer.bytes_written) == b"never"


# -- delete, iterate, size accounting ----------------------------------------------


def test_delete(store: FilesystemStore, root: Path) -> None:
    first = write_all(store, make_content(10, 4000))
    second = write_all(store, make_content(11, 6000))
    assert store.total_size() == 10_000
    assert store.delete(first.digest) is True
    assert store.delete(first.digest) is False
    assert not store.has(first.digest)
    assert store.has(second.digest)
    assert store.total_size() == 6000
    assert blob_files(root) == [Path(str(store.local_path(second.digest)))]


def test_iter_blobs_lists_committed_blobs_only(store: FilesystemStore, root: Path) -> None:
    infos = {write_all(store, make_content(seed, 1000 + seed)) for seed in range(12, 17)}
    infos.add(write_all(store, b""))
    # Things that are not blobs of this store: a partial, stray names, a
    # valid-looking name in the wrong shard, an unknown algorithm.
    stray_hex = Digest.of_bytes(b"stray").hex
    (root / "blobs" / "sha256" / "zz").mkdir()
    (root / "blobs" / "sha256" / "zz" / "README").write_bytes(b"not a blob")
    wrong_shard = "00" if not stray_hex.startswith("00") else "11"
    (root / "blobs" / "sha256" / wrong_shard).mkdir(exist_ok=True)
    (root / "blobs" / "sha256" / wrong_shard / stray_hex).write_bytes(b"misplaced")
    (root / "blobs" / "md5" / "d4").mkdir(parents=True)
    (root / "blobs" / "md5" / "d4" / ("d4" + "0" * 30)).write_bytes(b"old")
    with store.begin_write(Digest.of_bytes(b"in progress")) as in_progress:
        in_progress.write(b"in progress")
        assert set(store.iter_blobs()) == infos
        assert store.total_size() == sum(info.size for info in infos)


def test_total_size_after_reopen(store: FilesystemStore, root: Path) -> None:
    sizes = [0, 1, 999, 65_536, 123_457]
    for seed, size in enumerate(sizes):
        write_all(store, make_content(100 + seed, size))
    store.delete(Digest.of_bytes(make_content(102, 999)))
    expected = sum(sizes) - 999
    assert store.total_size() == expected
    reopened = FilesystemStore(root)
    assert reopened.total_size() == expected
    assert reopened.rescan_size() == expected


def test_a_damaged_blob_is_replaced_by_a_verified_commit(root: Path) -> None:
    content = make_content(18, 50_000)
    info = write_all(FilesystemStore(root), content)
    Path(str(FilesystemStore(root).local_path(info.digest))).write_bytes(b"truncated")
    store = FilesystemStore(root)
    assert store.total_size() == len(b"truncated")
    assert write_all(store, content) == info
    assert read_blob(store, info.digest) == content
    assert store.total_size() == len(content)


# -- concurrency ---------------------------------------------------------------------


def test_two_threads_commit_the_same_digest(store: FilesystemStore, root: Path) -> None:
    content = make_content(20, 1024 * 1024)
    digest = Digest.of_bytes(content)
    both_written = threading.Barrier(2, timeout=WAIT_SECONDS)
    results: list[BlobInfo] = []
    failures: list[BaseException] = []

    def write_and_commit() -> None:
        try:
            with store.begin_write(digest) as writer:
                for offset in range(0, len(content), CHUNK):
                    writer.write(content[offset : offset + CHUNK])
                both_written.wait()
                results.append(writer.commit(len(content)))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write_and_commit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive()
    assert failures == []
    assert results == [BlobInfo(digest, len(content))] * 2
    assert len(blob_files(root)) == 1
    assert read_blob(store, digest) == content
    assert tmp_entries(root) == []
    assert store.total_size() == len(content)  # counted once


def test_two_processes_commit_the_same_digest(
    root: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    FilesystemStore(root)
    writers = [start_child(children, WRITER_CHILD, str(root), "all") for _ in range(2)]
    for child in writers:
        assert read_line(child) == "ready"
    assert len(tmp_entries(root)) == 2
    for child in writers:
        assert child.stdin is not None
        child.stdin.write(b"commit\n")
    for child in writers:
        assert read_line(child) == f"committed {len(CHILD_CONTENT)}"
        finish(child)
    store = FilesystemStore(root)
    digest = Digest.of_bytes(CHILD_CONTENT)
    assert len(blob_files(root)) == 1
    assert read_blob(store, digest) == CHILD_CONTENT
    assert tmp_entries(root) == []
    assert store.total_size() == len(CHILD_CONTENT)


def test_readers_only_ever_see_complete_blobs(store: FilesystemStore) -> None:
    contents = [make_content(30 + seed, 256 * 1024 + seed) for seed in range(3)]
    digests = [Digest.of_bytes(content) for content in contents]
    writers_done = threading.Event()
    complete_reads = 0
    problems: list[str] = []
    failures: list[BaseException] = []

    def publish_and_delete() -> None:
        try:
            for _ in range(5):
                for content in contents:
                    with store.begin_write(Digest.of_bytes(content)) as writer:
                        for offset in range(0, len(content), 8192):
                            writer.write(content[offset : offset + 8192])
                        writer.commit(len(content))
                for digest in digests:
                    store.delete(digest)
        except BaseException as exc:
            failures.append(exc)

    def read_whatever_is_there() -> None:
        nonlocal complete_reads
        try:
            while not writers_done.is_set():
                for digest in digests:
                    try:
                        data = read_blob(store, digest)
                    except BlobNotFoundError:
                        continue
                    if Digest.of_bytes(data) == digest:
                        complete_reads += 1
                    else:
                        problems.append(f"{digest}: read {len(data)} bytes of other content")
        except BaseException as exc:
            failures.append(exc)

    writers = [threading.Thread(target=publish_and_delete) for _ in range(2)]
    readers = [threading.Thread(target=read_whatever_is_there) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive()
    writers_done.set()
    for thread in readers:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive()
    assert failures == []
    assert problems == []
    assert complete_reads > 0
    # Every commit and delete was counted exactly once.
    assert store.total_size() == sum(info.size for info in store.iter_blobs())


# -- crashes and recovery -------------------------------------------------------------


def test_recover_removes_abandoned_partials_only(store: FilesystemStore, root: Path) -> None:
    (root / "tmp" / "12345-0123456789abcdef.partial").write_bytes(b"left by a crash")
    content = make_content(40, 10_000)
    with store.begin_write(Digest.of_bytes(content)) as live:
        live.write(content[:5000])
        assert store.recover() == 1
        assert len(tmp_entries(root)) == 1  # the live writer's file is kept
        live.write(content[5000:])
        live.commit()
    assert read_blob(store, live.digest) == content
    assert tmp_entries(root) == []


def test_writer_killed_mid_write_leaves_nothing(
    root: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    digest = Digest.of_bytes(CHILD_CONTENT)
    child = start_child(children, WRITER_CHILD, str(root), "half")
    assert read_line(child) == "ready"
    store = FilesystemStore(root)
    assert len(tmp_entries(root)) == 1
    assert not store.has(digest)
    # The child is alive and holds its partial file: recover leaves it alone.
    assert store.recover() == 0
    assert len(tmp_entries(root)) == 1

    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL

    reopened = FilesystemStore(root)
    assert not reopened.has(digest)
    assert reopened.total_size() == 0
    assert reopened.recover() == 1
    assert tmp_entries(root) == []
    assert write_all(reopened, CHILD_CONTENT) == BlobInfo(digest, len(CHILD_CONTENT))
    assert read_blob(reopened, digest) == CHILD_CONTENT


# -- the file system refusing writes ------------------------------------------------


def test_file_size_limit_during_write(root: Path, children: list[subprocess.Popen[bytes]]) -> None:
    FilesystemStore(root)
    child = start_child(children, FILE_SIZE_LIMIT_CHILD, str(root))
    assert read_line(child) == "state=aborted"
    error = read_line(child)
    assert error.startswith("error=could not write blob sha256:")
    assert "file is too large" in error
    finish(child)
    store = FilesystemStore(root)
    assert not store.has(Digest.of_bytes(bytes(range(256)) * 4096))
    assert blob_files(root) == []
    assert tmp_entries(root) == []


def test_full_disk_during_write(store: FilesystemStore, root: Path) -> None:
    content = make_content(50, 200_000)
    writer = store.begin_write(Digest.of_bytes(content))
    writer.write(content[:100_000])
    # Point the partial file's descriptor at /dev/full, which answers every
    # write with ENOSPC exactly as a full disk does.
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, writer._file.fileno())
    finally:
        os.close(full)
    with pytest.raises(StorageError, match="the disk is full"):
        writer.write(content[100_000:])
    assert writer.state is BlobWriterState.ABORTED
    assert not store.has(writer.digest)
    assert tmp_entries(root) == []
    assert blob_files(root) == []
    assert write_all(store, content).size == len(content)


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match="could not create the store directory"):
        FilesystemStore(tmp_path / "file")


# -- hostile digests -----------------------------------------------------------------


def store_calls(store: FilesystemStore, digest: object) -> list[object]:
    return [
        lambda: store.has(digest),  # type: ignore[arg-type]
        lambda: store.stat(digest),  # type: ignore[arg-type]
        lambda: store.open_read(digest),  # type: ignore[arg-type]
        lambda: store.local_path(digest),  # type: ignore[arg-type]
        lambda: store.begin_write(digest),  # type: ignore[arg-type]
        lambda: store.delete(digest),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:" + "a" * 64,
        b"sha256:" + b"a" * 64,
        None,
        ("sha256", "a" * 64),
    ],
)
def test_only_digest_values_are_accepted(store: FilesystemStore, digest: object) -> None:
    for call in store_calls(store, digest):
        with pytest.raises(LocalProtocolError, match="takes Digest values"):
            call()  # type: ignore[operator]


@pytest.mark.parametrize(
    "digest",
    [
        Digest("sha256", "../../secret"),
        Digest("sha256", "../../" + "a" * 58),
        Digest("sha256", "A" * 64),
        Digest("sha256", "a" * 63),
        Digest("sha256", "a" * 65),
        Digest("sha256", "a" * 63 + "/"),
        Digest("sha256", "a" * 63 + "\x00"),
        Digest("md5", "a" * 32),
        Digest("../../sha256", "a" * 64),
        Digest("sha512", "a" * 64),
    ],
)
def test_malformed_digests_never_reach_the_file_system(
    store: FilesystemStore, tmp_path: Path, digest: Digest
) -> None:
    # Unchecked, Digest("sha256", "../../secret") would name this very file.
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside the store")
    for call in store_calls(store, digest):
        with pytest.raises(LocalProtocolError):
            call()  # type: ignore[operator]
    assert secret.read_bytes() == b"outside the store"
    assert tmp_entries(tmp_path / "store") == []


def test_random_digest_fields_are_refused_or_valid(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    algorithms = st.sampled_from([*ALGORITHM_HEX_LENGTHS, "md5", "", "SHA256"]) | st.text()
    hexes = st.text(alphabet="0123456789abcdefABCDEF./\\\x00:", max_size=130) | st.text()

    @settings(max_examples=300, deadline=None)
    @given(algorithm=algorithms, encoded=hexes)
    def check(algorithm: str, encoded: str) -> None:
        digest = Digest(algorithm, encoded)
        try:
            assert validate_blob_digest(digest) is digest
        except LocalProtocolError:
            with pytest.raises(LocalProtocolError):
                store.local_path(digest)
            return
        assert Digest.parse(str(digest)) == digest
        assert store.local_path(digest) is None

    check()
    assert sorted((tmp_path / "store").rglob("*")) == [
        tmp_path / "store" / "blobs",
        tmp_path / "store" / "tmp",
    ]
