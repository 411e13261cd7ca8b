"""The HTTP/1.1 server loop: bodies, keep-alive, HEAD, malformed requests, cut replies.

Most tests run ``serve_http`` behind a real loopback listener and talk to it
with an h11 client; the ones that need a stream that is not a socket, or
trio's autojump clock for the keep-alive timeout, call it directly on an
in-memory stream pair.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.testing

from regcache.core import AuthError, ErrorCode, RemoteProtocolError, StorageError
from regcache.proxy._server import (
    FILE_CHUNK,
    KEEP_ALIVE_TIMEOUT,
    MAX_DISCARDED_BODY,
    MAX_REQUEST_HEAD,
    FileBody,
    Handler,
    Reply,
    Request,
    StreamBody,
    serve_http,
)

# Upper bound on every test's waits, so that a bug fails instead of hanging.
TEST_DEADLINE = 10.0

FIVE_MIB = 5 * 1024 * 1024


# --- a server under test ---------------------------------------------------------------


@attrs.define(eq=False)
class Served:
    """What the server side saw: requests, connections, how each connection ended."""

    port: int = 0
    requests: list[Request] = attrs.Factory(list)
    connections: int = 0
    #: Connections whose serve_http returned (none raised: a raise fails the test).
    finished: int = 0
    changed: trio.Event = attrs.Factory(trio.Event)
    #: Client ends opened by the test, closed when the server stops.
    client_streams: list[trio.abc.Stream] = attrs.Factory(list)

    async def open_stream(self) -> trio.SocketStream:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.client_streams.append(stream)
        return stream

    async def connect(self) -> Client:
        return Client(await self.open_stream())

    def note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_finished(self, count: int) -> None:
        while self.finished < count:
            await self.changed.wait()

    async def hang_up(self, stream: trio.abc.Stream) -> None:
        """Close the client's end, then wait until the server's side is done too."""
        await stream.aclose()
        await self.wait_finished(self.connections)


def recording(served: Served, handler: Handler) -> Handler:
    async def handle(request: Request) -> Reply:
        served.requests.append(request)
        return await handler(request)

    return handle


@asynccontextmanager
async def loopback_server(handler: Handler) -> AsyncIterator[Served]:
    """Serve ``handler`` on a 127.0.0.1 port until the block ends."""
    served = Served()

    async def on_connection(stream: trio.SocketStream) -> None:
        served.connections += 1
        await serve_http(stream, recording(served, handler), client="127.0.0.1")
        served.finished += 1
        served.note()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        served.port = listeners[0].socket.getsockname()[1]
        await nursery.start(trio.serve_listeners, on_connection, listeners)
        try:
            yield served
        finally:
            with trio.CancelScope(shield=True):
                for stream in served.client_streams:
                    await stream.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def memory_server(handler: Handler) -> AsyncIterator[tuple[Client, Served]]:
    """Serve ``handler`` on one in-memory connection (a stream that is not a socket)."""
    served = Served()
    client_side, server_side = trio.testing.memory_stream_pair()

    async def run() -> None:
        served.connections += 1
        await serve_http(server_side, recording(served, handler), client="memory")
        served.finished += 1
        served.note()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield Client(client_side), served
        nursery.cancel_scope.cancel()


# --- an h11 client ---------------------------------------------------------------------


@attrs.frozen
class Answer:
    """A response as the client received it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def header(self, name: str) -> str:
        (value,) = self.header_values(name)
        return value

    def errors(self) -> list[dict[str, Any]]:
        assert self.header("content-type") == "application/json"
        document = json.loads(self.body)
        errors: list[dict[str, Any]] = document["errors"]
        return errors


@attrs.define(eq=False)
class Client:
    stream: trio.abc.Stream
    conn: h11.Connection = attrs.Factory(lambda: h11.Connection(h11.CLIENT))

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def send_request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        all_headers = [("Host", "regcache.test"), *headers]
        if body:
            all_headers.append(("Content-Length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(bytes(await self.stream.receive_some(64 * 1024)))

    async def response_head(self) -> h11.Response:
        event = await self.next_event()
        assert isinstance(event, h11.Response), event
        return event

    async def read_response(self) -> Answer:
        head = await self.response_head()
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            else:
                assert isinstance(event, h11.EndOfMessage), event
                break
        return answer(head, bytes(body))

    async def read_cut_response(self) -> tuple[Answer, int]:
        """A response whose connection closes mid-body: (head and partial body, Content-Length)."""
        head = await self.response_head()
        body = bytearray()
        with pytest.raises(h11.RemoteProtocolError, match="without sending complete message"):
            while True:
                event = await self.next_event()
                assert isinstance(event, h11.Data), event
                body += event.data
        cut = answer(head, bytes(body))
        return cut, int(cut.header("content-length"))

    async def get(self, target: str = "/", headers: Sequence[tuple[str, str]] = ()) -> Answer:
        await self.send_request("GET", target, headers)
        answered = await self.read_response()
        self.conn.start_next_cycle()
        return answered

    async def get_pipelined(self, targets: Sequence[str]) -> list[Answer]:
        """GET every target in one write, then read the answers in order."""
        await self.stream.send_all(
            b"".join(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for target in targets)
        )
        answers = []
        for target in targets:
            # h11 sends one request at a time: tell it of the one already sent.
            self.conn.send(h11.Request(method="GET", target=target, headers=[("Host", "a")]))
            self.conn.send(h11.EndOfMessage())
            answers.append(await self.read_response())
            self.conn.start_next_cycle()
        return answers

    async def assert_closed_by_server(self) -> None:
        """Nothing more comes, and the server closed its end."""
        assert await self.stream.receive_some(64 * 1024) == b""


def answer(head: h11.Response, body: bytes) -> Answer:
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    return Answer(head.status_code, headers, body)


def parse_raw_response(raw: bytes) -> Answer:
    """Parse a whole response received as raw bytes (to a request h11 never saw)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "regcache.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    head = conn.next_event()
    assert isinstance(head, h11.Response), head
    body = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            assert isinstance(event, h11.EndOfMessage), event
            break
    return answer(head, bytes(body))


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some(64 * 1024):
        received += chunk
    return bytes(received)


def constant(reply: Reply) -> Handler:
    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        return reply

    return handle


def raising(error: Exception) -> Handler:
    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        raise error

    return handle


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[str, bytes]:
    content = os.urandom(FIVE_MIB)
    path = tmp_path / "blob"
    path.write_bytes(content)
    return str(path), content


@attrs.define
class SendfileCalls:
    calls: int = 0
    sent: int = 0


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> SendfileCalls:
    """Count os.sendfile calls (and the bytes they moved) while still sending."""
    counted = SendfileCalls()
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        counted.calls += 1
        sent = real_sendfile(out_fd, in_fd, offset, count)
        counted.sent += sent
        return sent

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    return counted


# --- bodies ---------------------------------------------------------------------------


async def test_bytes_body_has_its_content_length() -> None:
    reply = Reply(
        200,
        (("Content-Type", "text/plain"), ("content-length", "999")),
        b"hello, registry",
    )
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            await client.send_request(
                "GET", "/v2/library/alpine/blobs/x?n=1", [("X-Probe", "One"), ("x-probe", "two")]
            )
            answered = await client.read_response()
    assert answered.status == 200
    assert answered.body == b"hello, registry"
    # The handler's own Content-Length is replaced by the true one.
    assert answered.header_values("content-length") == ["15"]
    assert answered.header("content-type") == "text/plain"
    assert answered.header("server") == "regcache"
    (request,) = served.requests
    assert request.method == "GET"
    assert request.target == "/v2/library/alpine/blobs/x?n=1"
    assert request.client == "127.0.0.1"
    assert request.host is None
    assert request.header("host") == "regcache.test"
    assert request.header_values("x-probe") == ["One", "two"]
    assert request.header("x-absent") is None


async def test_keep_alive_serves_requests_on_one_connection() -> None:
    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        return Reply(200, body=f"answer to {request.target}".encode())

    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(handle) as served:
            client = await served.connect()
            first = await client.get("/one")
            second = await client.get("/two")
            third, fourth = await client.get_pipelined(["/three", "/four"])
            assert served.finished == 0
            await client.stream.aclose()
            await served.wait_finished(1)
    assert [first.body, second.body, third.body, fourth.body] == [
        b"answer to /one",
        b"answer to /two",
        b"answer to /three",
        b"answer to /four",
    ]
    assert all(not a.header_values("connection") for a in (first, second, third, fourth))
    assert served.connections == 1
    assert [r.target for r in served.requests] == ["/one", "/two", "/three", "/four"]


async def test_client_connection_close_is_honoured() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(Reply(200, body=b"bye"))) as served:
            client = await served.connect()
            await client.send_request("GET", "/", [("Connection", "close")])
            answered = await client.read_response()
            await client.assert_closed_by_server()
            await served.hang_up(client.stream)
    assert answered.body == b"bye"
    assert answered.header("connection") == "close"


async def test_head_announces_the_length_and_sends_no_body(big_file: tuple[str, bytes]) -> None:
    path, content = big_file
    replies = {
        "/size": Reply(200, (("Docker-Content-Digest", "sha256:x"),), content_length=1234),
        "/file": Reply(200, body=FileBody(path, 0, len(content))),
        "/bytes": Reply(200, body=b"0123456789"),
    }

    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        return replies[request.target]

    answers: list[Answer] = []
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(handle) as served:
            client = await served.connect()
            for target in replies:
                await client.send_request("HEAD", target)
                answers.append(await client.read_response())
                client.conn.start_next_cycle()
            # Had any body been sent, this answer would be read from its bytes.
            after = await client.get("/bytes")
    sized, filed, small = answers
    assert sized.status == 200
    assert sized.header("content-length") == "1234"
    assert sized.header("docker-content-digest") == "sha256:x"
    assert filed.header("content-length") == str(len(content))
    assert small.header("content-length") == "10"
    assert [a.body for a in answers] == [b"", b"", b""]
    assert after.body == b"0123456789"
    assert served.connections == 1
    assert [r.method for r in served.requests] == ["HEAD", "HEAD", "HEAD", "GET"]


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, FIVE_MIB), (1000, 1024 * 1024 + 17), (FIVE_MIB - 1, 1), (0, 0)],
    ids=["whole", "slice", "last-byte", "empty"],
)
async def test_file_body_over_a_socket_is_sent_with_sendfile(
    big_file: tuple[str, bytes], sendfile_calls: SendfileCalls, offset: int, length: int
) -> None:
    path, content = big_file
    reply = Reply(200, body=FileBody(path, offset, length))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            first = await client.get("/blob")
            # The connection stays in step after a sendfile reply.
            second = await client.get("/blob")
    for answered in (first, second):
        assert answered.status == 200
        assert answered.header("content-length") == str(length)
        assert answered.body == content[offset : offset + length]
    assert sendfile_calls.sent == 2 * length
    if length:
        assert sendfile_calls.calls >= 2
    assert served.connections == 1


async def test_file_body_over_a_non_socket_stream_is_read_in_chunks(
    big_file: tuple[str, bytes], sendfile_calls: SendfileCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, content = big_file
    preads: list[int] = []
    real_preadv = os.preadv

    def counting_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        count = real_preadv(fd, buffers, offset)
        preads.append(count)
        return count

    monkeypatch.setattr(os, "preadv", counting_preadv)
    replies = {
        "/whole": Reply(200, body=FileBody(path, 0, len(content))),
        "/slice": Reply(200, body=FileBody(path, 12345, FILE_CHUNK * 2 + 3)),
    }

    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        return replies[request.target]

    with trio.fail_after(TEST_DEADLINE):
        async with memory_server(handle) as (client, _):
            whole = await client.get("/whole")
            sliced = await client.get("/slice")
    assert whole.body == content
    assert sliced.header("content-length") == str(FILE_CHUNK * 2 + 3)
    assert sliced.body == content[12345 : 12345 + FILE_CHUNK * 2 + 3]
    assert sendfile_calls.calls == 0
    assert max(preads) <= FILE_CHUNK
    assert sum(preads) == len(content) + FILE_CHUNK * 2 + 3


async def test_file_shorter_than_announced_cuts_the_connection_over_a_socket(
    tmp_path: Path, sendfile_calls: SendfileCalls
) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"x" * 1000)
    reply = Reply(200, body=FileBody(str(path), 0, 5000))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            await client.send_request()
            cut, length = await client.read_cut_response()
            await served.hang_up(client.stream)
    assert length == 5000
    assert cut.body == b"x" * 1000
    assert sendfile_calls.calls >= 1


async def test_file_shorter_than_announced_cuts_the_connection_over_a_non_socket(
    tmp_path: Path,
) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"x" * 1000)
    reply = Reply(200, body=FileBody(str(path), 0, 5000))
    with trio.fail_after(TEST_DEADLINE):
        async with memory_server(constant(reply)) as (client, served):
            await client.send_request()
            cut, length = await client.read_cut_response()
            await served.hang_up(client.stream)
    assert length == 5000
    assert cut.body == b"x" * 1000


async def test_a_file_gone_before_sending_is_answered_503(tmp_path: Path) -> None:
    # The file is opened before the response head goes out, so a blob that
    # vanished (evicted) is reported, not cut, and the connection stays usable.
    reply = Reply(200, body=FileBody(str(tmp_path / "gone"), 0, 10))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            first = await client.get()
            second = await client.get()
            await served.hang_up(client.stream)
    assert first.status == second.status == 503
    assert json.loads(first.body)["errors"][0]["code"] == "UNAVAILABLE"


async def test_client_leaving_mid_sendfile_ends_the_connection_quietly(
    big_file: tuple[str, bytes], sendfile_calls: SendfileCalls
) -> None:
    path, content = big_file
    reply = Reply(200, body=FileBody(path, 0, len(content)))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            await client.send_request()
            head = await client.response_head()
            assert head.status_code == 200
            await client.stream.aclose()
            # serve_http returned instead of raising (a raise would fail the test).
            await served.wait_finished(1)
    assert sendfile_calls.calls >= 1
    assert sendfile_calls.sent < len(content)


async def test_stream_body_is_sent_as_produced() -> None:
    chunks = [b"first ", b"second ", b"third"]

    async def produce(send: Callable[[bytes], Awaitable[None]]) -> None:
        for chunk in chunks:
            await trio.sleep(0.001)
            await send(chunk)

    reply = Reply(200, body=StreamBody(sum(map(len, chunks)), produce))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            first = await client.get()
            second = await client.get()
    assert first.body == second.body == b"first second third"
    assert first.header("content-length") == "18"
    assert served.connections == 1


async def test_failing_stream_body_cuts_the_connection_short() -> None:
    async def produce(send: Callable[[bytes], Awaitable[None]]) -> None:
        await send(b"a" * 70_000)
        await send(b"b" * 10)
        raise RemoteProtocolError(ErrorCode.UPSTREAM_ERROR, "upstream content was bad")

    reply = Reply(200, body=StreamBody(100_000, produce))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            await client.send_request()
            cut, length = await client.read_cut_response()
            await served.hang_up(client.stream)
    assert cut.status == 200
    assert length == 100_000
    assert cut.body == b"a" * 70_000 + b"b" * 10


async def test_stream_body_that_ends_early_cuts_the_connection() -> None:
    async def produce(send: Callable[[bytes], Awaitable[None]]) -> None:
        await send(b"only this")

    reply = Reply(200, body=StreamBody(100, produce))
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(reply)) as served:
            client = await served.connect()
            await client.send_request()
            cut, length = await client.read_cut_response()
            await served.hang_up(client.stream)
    assert (length, cut.body) == (100, b"only this")


# --- errors -------------------------------------------------------------------------------


async def test_remote_protocol_error_is_answered_as_oci_json() -> None:
    errors: dict[str, Exception] = {
        "/missing": RemoteProtocolError(
            ErrorCode.BLOB_UNKNOWN, "blob unknown", detail={"digest": "sha256:x"}
        ),
        "/auth": AuthError(
            "log in first", headers=(("WWW-Authenticate", 'Basic realm="regcache"'),)
        ),
        "/teapot": RemoteProtocolError(ErrorCode.UNSUPPORTED, "no", status=418),
        "/disk": StorageError("the disk is full"),
    }

    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        raise errors[request.target]

    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(handle) as served:
            client = await served.connect()
            missing = await client.get("/missing")
            auth = await client.get("/auth")
            teapot = await client.get("/teapot")
            disk = await client.get("/disk")
    assert missing.status == 404
    assert missing.errors() == [
        {"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": {"digest": "sha256:x"}}
    ]
    assert missing.header("content-length") == str(len(missing.body))
    assert auth.status == 401
    assert auth.errors() == [{"code": "UNAUTHORIZED", "message": "log in first"}]
    assert auth.header("www-authenticate") == 'Basic realm="regcache"'
    assert teapot.status == 418
    assert teapot.errors()[0]["code"] == "UNSUPPORTED"
    # Any other regcache error is ours: a 500 that says what failed.
    assert disk.status == 500
    assert disk.errors() == [{"code": "UNKNOWN", "message": "the disk is full"}]
    # Error answers keep the connection.
    assert served.connections == 1


async def test_handler_bug_is_answered_500_and_the_server_keeps_serving() -> None:
    async def handle(request: Request) -> Reply:
        await trio.lowlevel.checkpoint()
        if request.target == "/bug":
            raise KeyError("a bug in one request")
        return Reply(200, body=b"still here")

    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(handle) as served:
            first = await served.connect()
            failed = await first.get("/bug")
            again = await first.get("/ok")
            other = await served.connect()
            fine = await other.get("/ok")
    assert failed.status == 500
    (error,) = failed.errors()
    assert error["code"] == "UNKNOWN"
    assert (again.status, again.body) == (200, b"still here")
    assert (fine.status, fine.body) == (200, b"still here")


async def test_malformed_request_line_is_answered_400_and_closed() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(Reply(200))) as served:
            stream = await served.open_stream()
            await stream.send_all(b"GET /v2/ HTTP/1.1 trailing junk\r\nHost: a\r\n\r\n")
            raw = await read_until_closed(stream)
            await served.hang_up(stream)
    answered = parse_raw_response(raw)
    assert answered.status == 400
    assert answered.header("connection") == "close"
    (error,) = answered.errors()
    assert error["code"] == "UNKNOWN"
    assert error["message"].startswith("malformed HTTP request")
    assert served.requests == []


async def test_oversized_request_head_is_answered_431_and_closed() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(constant(Reply(200))) as served:
            stream = await served.open_stream()
            padding = b"a" * (MAX_REQUEST_HEAD + 1)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Padding: " + padding + b"\r\n")
            raw = await read_until_closed(stream)
            await served.hang_up(stream)
    answered = parse_raw_response(raw)
    assert answered.status == 431
    assert answered.header("connection") == "close"
    assert served.requests == []


async def test_small_request_body_is_discarded_and_the_connection_kept() -> None:
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(raising(RemoteProtocolError(ErrorCode.UNSUPPORTED))) as served:
            client = await served.connect()
            await client.send_request("POST", "/upload", body=b"u" * 100_000)
            refused = await client.read_response()
            client.conn.start_next_cycle()
            again = await client.get("/after")
    assert refused.status == 405
    assert not refused.header_values("connection")
    assert again.status == 405
    assert served.connections == 1
    assert [r.target for r in served.requests] == ["/upload", "/after"]


async def test_large_request_body_is_answered_then_the_connection_closed() -> None:
    # The client sent more of its upload than the server reads before it
    # gives up. It must get the whole answer and then an orderly end of the
    # connection, not a reset: closing with unread input makes the kernel
    # send one, and a reset may destroy the answer before the client reads
    # it (RFC 9112 section 9.6).
    body = b"u" * (MAX_DISCARDED_BODY * 4)
    head = (
        b"POST /v2/library/alpine/blobs/uploads/ HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    received = bytearray()
    with trio.fail_after(TEST_DEADLINE):
        async with loopback_server(raising(RemoteProtocolError(ErrorCode.UNSUPPORTED))) as served:
            stream = await served.open_stream()
            await stream.send_all(head + body[: MAX_DISCARDED_BODY + 512 * 1024])
            try:
                while chunk := await stream.receive_some(64 * 1024):
                    received += chunk
            except trio.BrokenResourceError as exc:
                pytest.fail(f"the connection was reset after {len(received)} bytes: {exc}")
            await stream.aclose()
            await served.wait_finished(1)
    answered = parse_raw_response(bytes(received))
    assert answered.status == 405
    assert answered.header("connection") == "close"
    assert answered.errors()[0]["code"] == "UNSUPPORTED"
    assert len(served.requests) == 1


# --- timeouts -----------------------------------------------------------------------------


async def test_idle_keep_alive_connection_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(KEEP_ALIVE_TIMEOUT * 3):
        async with memory_server(constant(Reply(200, body=b"ok"))) as (client, served):
            answered = await client.get()
            idle_since = trio.current_time()
            await client.assert_closed_by_server()
            closed_after = trio.current_time() - idle_since
            await served.hang_up(client.stream)
    assert answered.body == b"ok"
    assert closed_after == pytest.approx(KEEP_ALIVE_TIMEOUT)


async def test_slow_request_head_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(KEEP_ALIVE_TIMEOUT * 3):
        async with memory_server(constant(Reply(200))) as (client, served):
            started = trio.current_time()
            await client.stream.send_all(b"GET / HTTP/1.1\r\n")
            await trio.sleep(KEEP_ALIVE_TIMEOUT / 2)
            await client.stream.send_all(b"Host: a\r\n")
            await client.assert_closed_by_server()
            closed_after = trio.current_time() - started
            await served.hang_up(client.stream)
    assert closed_after == pytest.approx(KEEP_ALIVE_TIMEOUT)
    assert served.requests == []
