"""The upstream HTTP/1.1 client against real loopback servers, TLS and a CONNECT proxy."""

from __future__ import annotations

import base64
import functools
import itertools
import random
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import h11
import pytest
import trio
import trio.testing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from regcache import __version__
from regcache.core._errors import LocalProtocolError, RegcacheError
from regcache.engine._http import (
    RAW_BODY_CHUNK,
    RAW_BODY_THRESHOLD,
    RECEIVE_CHUNK_BYTES,
    HttpClient,
    Origin,
    UpstreamConnectError,
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeoutError,
    parse_url,
    resolve_location,
)

UPSTREAM_NAME = "upstream.regcache.test"
# Upper bound on any wait in these tests, so that a bug fails instead of hanging.
TEST_DEADLINE = 5.0

# --- a loopback HTTP/1.1 server -------------------------------------------------


@attrs.define(eq=False)
class ServerConn:
    """One accepted connection, as a handler sees it."""

    stream: trio.abc.Stream
    protocol: h11.Connection
    number: int

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.protocol.send(event)
            if data:
                await self.stream.send_all(data)

    async def respond(
        self, status: int = 200, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        all_headers = [*headers]
        if not any(name.lower() == "transfer-encoding" for name, _ in headers):
            all_headers.append(("Content-Length", str(len(body))))
        await self.send(h11.Response(status_code=status, headers=all_headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def read_request(self) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the client closed the connection."""
        request = None
        body = b""
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                if not data and request is None:
                    return None
                self.protocol.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, body
            else:
                return None


Handler = Callable[[ServerConn, h11.Request, bytes], Awaitable[None]]


@attrs.define(eq=False)
class Server:
    """What a test server saw: connections, requests, connections the client closed."""

    port: int = 0
    connections: int = 0
    closed_by_client: int = 0
    # (connection number, method, target, headers with lower-cased names)
    requests: list[tuple[int, str, str, dict[str, str]]] = attrs.Factory(list)

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    changed: trio.Event = attrs.Factory(trio.Event)

    def note_closed_by_client(self) -> None:
        self.closed_by_client += 1
        self.changed.set()
        self.changed = trio.Event()

    async def wait_closed_by_client(self, count: int) -> None:
        with trio.fail_after(TEST_DEADLINE):
            while self.closed_by_client < count:
                await self.changed.wait()


@asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """Run an h11 server on 127.0.0.1 until the block ends."""
    server = Server()

    async def on_connection(stream: trio.abc.Stream) -> None:
        server.connections += 1
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        conn = ServerConn(stream, h11.Connection(h11.SERVER), server.connections)
        try:
            while True:
                got = await conn.read_request()
                if got is None:
                    server.note_closed_by_client()
                    return
                request, body = got
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
                server.requests.append(
                    (conn.number, request.method.decode(), request.target.decode(), headers)
                )
                await handler(conn, request, body)
                if conn.protocol.our_state is not h11.DONE:
                    return
                conn.protocol.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            server.note_closed_by_client()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def answer_ok(conn: ServerConn, request: h11.Request, body: bytes) -> None:
    await conn.respond(200, [("Content-Type", "text/plain")], b"ok " + request.target)


# --- a loopback CONNECT proxy ----------------------------------------------------


@attrs.define(eq=False)
class Proxy:
    port: int = 0
    targets: list[str] = attrs.Factory(list)
    authorizations: list[str | None] = attrs.Factory(list)

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"


async def pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def serve_proxy(
    names: dict[str, str],
    *,
    refuse: int | None = None,
    canned_answer: bytes | None = None,
    stall: bool = False,
) -> AsyncIterator[Proxy]:
    """A CONNECT proxy that resolves ``names`` itself, or refuses with a status.

    With ``canned_answer``, it answers CONNECT and, in the same write, sends
    those bytes as if they came from the origin, which it never contacts.
    """
    proxy = Proxy()

    async def on_connection(client: trio.SocketStream) -> None:
        async with client:
            protocol = h11.Connection(h11.SERVER)
            request = None
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    data = await client.receive_some(65536)
                    if not data:
                        return
                    protocol.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert request is not None and request.method == b"CONNECT"
            target = request.target.decode()
            proxy.targets.append(target)
            auth = dict(request.headers).get(b"proxy-authorization")
            proxy.authorizations.append(auth.decode() if auth else None)
            if stall:
                await trio.sleep_forever()
            if refuse is not None:
                answer = h11.Response(status_code=refuse, headers=[("Content-Length", "0")])
                await client.send_all(protocol.send(answer) + protocol.send(h11.EndOfMessage()))
                return
            head = protocol.send(h11.Response(status_code=200, headers=[]))
            if canned_answer is not None:
                await client.send_all(head + canned_answer)
                while await client.receive_some(65536):
                    pass
                return
            host, _, port = target.rpartition(":")
            upstream = await trio.open_tcp_stream(names.get(host, host), int(port))
            async with upstream:
                await client.send_all(head)
                leftover, _ = protocol.trailing_data
                if leftover:
                    await upstream.send_all(leftover)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(pump, upstream, client, nursery.cancel_scope)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1")
        )
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()


# --- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(UPSTREAM_NAME, "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(connect_timeout=TEST_DEADLINE, read_timeout=TEST_DEADLINE)
    yield http
    await http.aclose()


async def get_body(http: HttpClient, url: str, method: str = "GET") -> tuple[int, bytes]:
    async with await http.request(method, url) as response:
        return response.status, await response.read_all(1 << 20)


# --- plain requests ---------------------------------------------------------------


async def test_get_with_content_length(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        headers = [
            ("Content-Type", "text/plain"),
            ("Link", "<a>; rel=next"),
            ("Link", "<b>; rel=prev, <c>; rel=last"),
            ("X-Latin", "caf\xe9"),
        ]
        await conn.send(
            h11.Response(
                status_code=200,
                reason=b"Fine",
                headers=[(n.encode(), v.encode("latin-1")) for n, v in headers]
                + [(b"Content-Length", b"11")],
            ),
            h11.Data(data=b"hello world"),
            h11.EndOfMessage(),
        )

    async with serve(handler) as server:
        url = server.url("/v2/x?n=1")
        response = await client.request("GET", url, [("Accept", "text/plain")])
        async with response:
            assert response.status == 200
            assert response.reason == b"Fine"
            assert response.url == url
            assert response.content_length == 11
            assert response.header("CONTENT-TYPE") == "text/plain"
            assert response.header("x-missing") is None
            assert response.header_values("link") == [
                "<a>; rel=next",
                "<b>; rel=prev, <c>; rel=last",
            ]
            assert response.header("x-latin") == "caf\xe9"
            assert all(name == name.lower() for name, _ in response.headers)
            assert await response.read_all(11) == b"hello world"
            assert await response.read_chunk() == b""
    [(_, method, target, headers)] = server.requests
    assert (method, target) == ("GET", "/v2/x?n=1")
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["user-agent"] == f"regcache/{__version__}"
    assert headers["accept"] == "text/plain"
    assert "content-length" not in headers


async def test_caller_headers_override_host_and_user_agent(client: HttpClient) -> None:
    async with serve(answer_ok) as server:
        headers = [("host", "example.test"), ("User-Agent", "other/1")]
        async with await client.request("GET", server.url(), headers) as response:
            await response.read_all(100)
    [(_, _, _, seen)] = server.requests
    assert seen["host"] == "example.test"
    assert seen["user-agent"] == "other/1"


async def test_chunked_body_streams_in_bounded_chunks(client: HttpClient) -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    pieces = 48  # 3 MiB in all

    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
        for _ in range(pieces):
            await conn.send(h11.Data(data=piece))
        await conn.send(h11.EndOfMessage())

    async with serve(handler) as server:
        async with await client.request("GET", server.url("/blob")) as response:
            assert response.content_length is None
            total = 0
            chunks = 0
            while chunk := await response.read_chunk():
                assert len(chunk) <= RECEIVE_CHUNK_BYTES
                assert chunk == (piece * 5)[total % len(piece) :][: len(chunk)]
                total += len(chunk)
                chunks += 1
        assert total == len(piece) * pieces
        assert chunks > 1


async def test_head_has_no_body_and_keeps_the_connection(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.send(
            h11.Response(status_code=200, headers=[("Content-Length", "1234")]),
            h11.EndOfMessage(),
        )

    async with serve(handler) as server:
        async with await client.request("HEAD", server.url("/blob")) as response:
            assert response.content_length == 1234
            assert await response.read_all(10) == b""
        async with await client.request("HEAD", server.url("/blob")) as response:
            # Closing without reading: the end of a HEAD answer is already known.
            assert response.status == 200
        async with await client.request("HEAD", server.url("/blob")) as response:
            assert response.status == 200
    assert [r[:2] for r in server.requests] == [(1, "HEAD"), (1, "HEAD"), (1, "HEAD")]


async def test_informational_responses_are_skipped(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.send(h11.InformationalResponse(status_code=103, headers=[("Link", "<x>")]))
        await conn.respond(201, body=b"made")

    async with serve(handler) as server:
        assert await get_body(client, server.url()) == (201, b"made")


async def test_post_sends_its_body_and_content_length(client: HttpClient) -> None:
    bodies: list[bytes] = []

    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        bodies.append(body)
        await conn.respond(200, body=b"{}")

    async with serve(handler) as server:
        response = await client.request("POST", server.url("/token"), body=b"grant_type=x")
        async with response:
            assert await response.read_all(10) == b"{}"
        async with await client.request("POST", server.url("/empty")) as response:
            await response.read_all(10)
    assert bodies == [b"grant_type=x", b""]
    assert server.requests[0][3]["content-length"] == "12"
    assert server.requests[1][3]["content-length"] == "0"


# --- connection reuse ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(client: HttpClient) -> None:
    async with serve(answer_ok) as server:
        assert await get_body(client, server.url("/a")) == (200, b"ok /a")
        assert await get_body(client, server.url("/b")) == (200, b"ok /b")
    assert server.connections == 1
    assert [(r[0], r[2]) for r in server.requests] == [(1, "/a"), (1, "/b")]


async def test_body_read_to_its_length_releases_the_connection(client: HttpClient) -> None:
    async with serve(answer_ok) as server:
        for path in ("/a", "/b"):
            async with await client.request("GET", server.url(path)) as response:
                # Stop at the expected length, without asking for the end.
                assert await response.read_chunk() == b"ok " + path.encode()
    assert [(r[0], r[2]) for r in server.requests] == [(1, "/a"), (1, "/b")]


async def test_unread_body_closes_the_connection(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.respond(200, body=b"x" * 100_000)

    async with serve(handler) as server:
        async with await client.request("GET", server.url("/a")):
            pass
        await server.wait_closed_by_client(1)
        assert await get_body(client, server.url("/b")) == (200, b"x" * 100_000)
    assert server.connections == 2


async def test_connection_close_answer_is_not_reused(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.respond(200, [("Connection", "close")], b"bye")

    async with serve(handler) as server:
        assert await get_body(client, server.url("/a")) == (200, b"bye")
        assert await get_body(client, server.url("/b")) == (200, b"bye")
    assert server.connections == 2


async def test_pooled_connection_closed_before_answering_is_replayed(
    client: HttpClient,
) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        if conn.number == 1 and request.target == b"/b":
            # The server dropped the idle connection just as the request came.
            await conn.stream.aclose()
            return
        await answer_ok(conn, request, body)

    async with serve(handler) as server:
        assert await get_body(client, server.url("/a")) == (200, b"ok /a")
        assert await get_body(client, server.url("/b")) == (200, b"ok /b")
    assert [(r[0], r[2]) for r in server.requests] == [(1, "/a"), (1, "/b"), (2, "/b")]


async def test_idle_connection_closed_by_the_server_is_not_used(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await answer_ok(conn, request, body)
        await conn.stream.aclose()

    async with serve(handler) as server:
        assert await get_body(client, server.url("/a")) == (200, b"ok /a")
        await trio.sleep(0.05)
        assert await get_body(client, server.url("/b")) == (200, b"ok /b")
    assert server.connections == 2


async def test_failed_post_on_a_pooled_connection_is_not_replayed(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        if request.method == b"POST":
            await conn.stream.aclose()
            return
        await answer_ok(conn, request, body)

    async with serve(handler) as server:
        assert await get_body(client, server.url("/a")) == (200, b"ok /a")
        with pytest.raises(UpstreamProtocolError, match="without answering"):
            await client.request("POST", server.url("/upload"), body=b"data")
    assert [(r[0], r[1]) for r in server.requests] == [(1, "GET"), (1, "POST")]


# Tests of timeouts run on trio's autojump clock: every peer is in this process,
# so time only jumps when all of them wait, and the timeouts are realistic ones.


async def test_idle_timeout_retires_old_connections(autojump_clock: trio.testing.MockClock) -> None:
    http = HttpClient(idle_timeout=60)
    async with http, serve(answer_ok) as server:
        await get_body(http, server.url("/a"))
        await trio.sleep(59)
        await get_body(http, server.url("/b"))
        assert server.connections == 1
        await trio.sleep(61)
        await get_body(http, server.url("/b"))
        await server.wait_closed_by_client(1)
    assert server.connections == 2


async def test_pool_keeps_at_most_max_idle_per_origin() -> None:
    http = HttpClient(read_timeout=TEST_DEADLINE, max_idle_per_origin=1)
    async with http, serve(answer_ok) as server:
        first = await http.request("GET", server.url("/a"))
        second = await http.request("GET", server.url("/b"))
        assert server.connections == 2
        await first.read_all(100)
        await second.read_all(100)
        await server.wait_closed_by_client(1)
        await get_body(http, server.url("/c"))
        assert server.connections == 2
        assert server.closed_by_client == 1


async def test_client_aclose_closes_pooled_connections() -> None:
    http = HttpClient(read_timeout=TEST_DEADLINE)
    async with serve(answer_ok) as server:
        await get_body(http, server.url())
        assert server.closed_by_client == 0
        await http.aclose()
        await server.wait_closed_by_client(1)
    with pytest.raises(LocalProtocolError):
        await http.request("GET", server.url())


# --- response limits and broken responses -------------------------------------------


def big_headers(total: int) -> list[tuple[str, str]]:
    return [(f"X-Filler-{i}", "v" * 1000) for i in range(total // 1000)]


async def test_large_response_headers_are_accepted(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.respond(200, big_headers(70_000), b"ok")

    async with serve(handler) as server, await client.request("GET", server.url()) as response:
        assert len(response.header_values("x-filler-69")) == 1
        assert await response.read_all(2) == b"ok"


async def test_header_block_over_the_limit_is_refused() -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.respond(200, big_headers(64 * 1024), b"ok")

    http = HttpClient(read_timeout=TEST_DEADLINE, max_header_bytes=16 * 1024)
    async with http, serve(handler) as server:
        with pytest.raises(UpstreamProtocolError, match="header block over 16384") as info:
            await http.request("GET", server.url())
    assert info.value.status == 502


async def test_read_all_limit() -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        if request.target == b"/chunked":
            await conn.send(
                h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]),
                h11.Data(data=b"x" * 600),
                h11.Data(data=b"x" * 400),
                h11.EndOfMessage(),
            )
        else:
            await conn.respond(200, body=b"x" * 1000)

    async with HttpClient(read_timeout=TEST_DEADLINE) as http, serve(handler) as server:
        for path in ("/sized", "/chunked"):
            async with await http.request("GET", server.url(path)) as response:
                with pytest.raises(UpstreamProtocolError, match="over the limit of 999"):
                    await response.read_all(999)
            async with await http.request("GET", server.url(path)) as response:
                assert await response.read_all(1000) == b"x" * 1000


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_large_body_read_around_h11_arrives_intact(
    scheme: str, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    # Bodies from RAW_BODY_THRESHOLD up are read around h11 into one reused
    # buffer (over plain TCP with recv_into, over TLS gathering records): each
    # piece is a view, good until the next read.
    body = random.Random(7).randbytes(3 * RAW_BODY_THRESHOLD + 12345)

    async def handler(conn: ServerConn, request: h11.Request, _: bytes) -> None:
        await conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))]))
        # Uneven pieces, so reads end anywhere.
        view, position = memoryview(body), 0
        for size in itertools.cycle((1, 70_000, RAW_BODY_CHUNK + 3, 333_333)):
            if position >= len(body):
                break
            await conn.send(h11.Data(data=bytes(view[position : position + size])))
            position += size
        await conn.send(h11.EndOfMessage())

    tls = server_tls if scheme == "https" else None
    async with (
        HttpClient(ssl_context=client_tls, read_timeout=TEST_DEADLINE) as client,
        serve(handler, tls=tls) as server,
    ):
        url = server.url(scheme=scheme)
        async with await client.request("GET", url) as response:
            assert await response.read_all(len(body)) == body
        received = bytearray()
        sizes = []
        async with await client.request("GET", url) as response:
            while chunk := await response.read_chunk():
                assert isinstance(chunk, (bytes, memoryview))
                sizes.append(len(chunk))
                received += chunk
        assert received == body
        assert max(sizes) <= RAW_BODY_CHUNK
        # TLS records are 16 KiB at most; pieces gather several of them.
        assert max(sizes) > 64 * 1024


async def test_a_tls_body_that_pauses_is_handed_on_without_waiting_for_more(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    # Gathering TLS records is bounded in time: what arrived before a pause
    # is handed on during the pause, not when the next bytes come.
    body = b"x" * (2 * RAW_BODY_THRESHOLD)
    resume = trio.Event()

    async def handler(conn: ServerConn, request: h11.Request, _: bytes) -> None:
        await conn.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))]))
        await conn.send(h11.Data(data=body[:100_000]))
        await resume.wait()
        await conn.send(h11.Data(data=body[100_000:]), h11.EndOfMessage())

    async with (
        HttpClient(ssl_context=client_tls, read_timeout=TEST_DEADLINE) as client,
        serve(handler, tls=server_tls) as server,
    ):
        async with await client.request("GET", server.url(scheme="https")) as response:
            received = 0
            with trio.fail_after(TEST_DEADLINE):
                while received < 100_000:
                    received += len(await response.read_chunk())
            assert received == 100_000
            resume.set()
            while chunk := await response.read_chunk():
                received += len(chunk)
        assert received == len(body)


@pytest.mark.parametrize("framing", ["sized", "chunked"])
async def test_body_cut_off_mid_stream(client: HttpClient, framing: str) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        if framing == "sized":
            await conn.send(h11.Response(status_code=200, headers=[("Content-Length", "1000")]))
        else:
            await conn.send(
                h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")])
            )
        await conn.send(h11.Data(data=b"x" * 100))
        await conn.stream.aclose()

    async with serve(handler) as server, await client.request("GET", server.url()) as response:
        received = b""
        with pytest.raises(UpstreamProtocolError, match=f"127.0.0.1:{server.port}"):
            for _ in range(10):
                received += await response.read_chunk()
        assert received == b"x" * 100
        with pytest.raises(LocalProtocolError):
            await response.read_chunk()


async def test_malformed_response_is_a_protocol_error(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.stream.send_all(b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n")
        await conn.stream.aclose()

    async with serve(handler) as server:
        with pytest.raises(UpstreamProtocolError, match="malformed response"):
            await client.request("GET", server.url())


async def test_read_timeout_waiting_for_the_head(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await trio.sleep_forever()

    async with HttpClient() as http, serve(handler) as server:
        with pytest.raises(UpstreamTimeoutError, match="sent nothing for 30 s") as info:
            await http.request("GET", server.url())
    assert info.value.status == 504
    assert not isinstance(info.value, UpstreamConnectError)


async def test_read_timeout_applies_to_each_body_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        await conn.send(h11.Response(status_code=200, headers=[("Content-Length", "10")]))
        await conn.send(h11.Data(data=b"12345"))
        await trio.sleep_forever()

    async with HttpClient(read_timeout=30) as http, serve(handler) as server:
        response = await http.request("GET", server.url())
        async with response:
            assert await response.read_chunk() == b"12345"
            with pytest.raises(UpstreamTimeoutError):
                await response.read_chunk()


# --- connecting: errors, TLS ---------------------------------------------------------


async def free_port() -> int:
    sock = trio.socket.socket()
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused(client: HttpClient) -> None:
    port = await free_port()
    with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}: .*refused") as info:
        await client.request("GET", f"http://user:pa55word@127.0.0.1:{port}/v2/")
    assert info.value.origin == Origin("http", "127.0.0.1", port)
    assert info.value.status == 502
    assert "pa55word" not in str(info.value)


async def test_unresolvable_name(client: HttpClient) -> None:
    with pytest.raises(UpstreamConnectError, match=f"{UPSTREAM_NAME}:443"):
        await client.request("GET", f"https://{UPSTREAM_NAME}/v2/")


async def test_tls_with_a_ca_for_the_origin(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with serve(answer_ok, tls=server_tls) as server:
        url = server.url("/v2/", scheme="https")
        origins: list[Origin] = []

        def context_for(origin: Origin) -> ssl.SSLContext:
            origins.append(origin)
            return client_tls

        async with HttpClient(ssl_context_for=context_for, read_timeout=TEST_DEADLINE) as http:
            assert await get_body(http, url) == (200, b"ok /v2/")
            assert await get_body(http, url) == (200, b"ok /v2/")
        async with HttpClient(ssl_context=client_tls, read_timeout=TEST_DEADLINE) as http:
            assert await get_body(http, url) == (200, b"ok /v2/")
    assert origins == [Origin("https", "127.0.0.1", server.port)]
    assert server.connections == 2


async def test_tls_with_the_default_context_rejects_an_unknown_ca(
    client: HttpClient, server_tls: ssl.SSLContext
) -> None:
    async with serve(answer_ok, tls=server_tls) as server:
        with pytest.raises(UpstreamConnectError, match="certificate verify failed") as info:
            await client.request("GET", server.url(scheme="https"))
    assert f"127.0.0.1:{server.port}" in str(info.value)


async def test_tls_to_a_plain_http_server_fails_cleanly(client: HttpClient) -> None:
    async def handler(conn: ServerConn, request: h11.Request, body: bytes) -> None:
        raise AssertionError("no request can arrive")

    async def garbage(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, garbage, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(UpstreamConnectError, match=r"TLS handshake with 127\.0\.0\.1"):
            await client.request("GET", f"https://127.0.0.1:{port}/")
        nursery.cancel_scope.cancel()


async def test_connect_timeout_covers_the_tls_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        async with HttpClient() as http:
            with pytest.raises(UpstreamConnectTimeoutError, match="took over 10 s") as info:
                await http.request("GET", f"https://127.0.0.1:{port}/")
        nursery.cancel_scope.cancel()
    assert isinstance(info.value, UpstreamTimeoutError)
    assert info.value.status == 504


# --- the egress proxy --------------------------------------------------------------


async def test_https_through_an_egress_proxy(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with (
        serve(answer_ok, tls=server_tls) as server,
        serve_proxy({UPSTREAM_NAME: "127.0.0.1"}) as proxy,
    ):
        url = server.url("/v2/", host=UPSTREAM_NAME, scheme="https")
        proxy_url = proxy.url("us%40er:s3:cret@")
        async with HttpClient(
            ssl_context=client_tls,
            proxy_for=lambda origin: proxy_url,
            read_timeout=TEST_DEADLINE,
        ) as http:
            assert await get_body(http, url) == (200, b"ok /v2/")
            assert await get_body(http, url) == (200, b"ok /v2/")
        async with HttpClient(ssl_context=client_tls, read_timeout=TEST_DEADLINE) as http:
            with pytest.raises(UpstreamConnectError, match=UPSTREAM_NAME):
                await http.request("GET", url)
    assert proxy.targets == [f"{UPSTREAM_NAME}:{server.port}"]
    assert proxy.authorizations == ["Basic " + base64.b64encode(b"us@er:s3:cret").decode()]
    assert server.requests[0][3]["host"] == f"{UPSTREAM_NAME}:{server.port}"


async def test_plain_http_through_an_egress_proxy() -> None:
    proxy_url = ""
    http = HttpClient(proxy_for=lambda origin: proxy_url, read_timeout=TEST_DEADLINE)
    async with (
        serve(answer_ok) as server,
        serve_proxy({UPSTREAM_NAME: "127.0.0.1"}) as proxy,
        http,
    ):
        proxy_url = proxy.url()
        url = server.url("/x", host=UPSTREAM_NAME)
        assert await get_body(http, url) == (200, b"ok /x")
    assert proxy.targets == [f"{UPSTREAM_NAME}:{server.port}"]
    assert proxy.authorizations == [None]


async def test_origin_bytes_sent_with_the_connect_answer_are_kept(client: HttpClient) -> None:
    canned = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ncanned"
    async with (
        serve_proxy({}, canned_answer=canned) as proxy,
        HttpClient(proxy_for=lambda origin: proxy.url(), read_timeout=TEST_DEADLINE) as http,
    ):
        assert await get_body(http, "http://origin.regcache.test/") == (200, b"canned")


async def test_proxy_refusal_names_the_proxy_and_the_status() -> None:
    async with serve_proxy({}, refuse=403) as proxy:
        proxy_url = proxy.url("user:topsecret@")
        async with HttpClient(
            proxy_for=lambda origin: proxy_url, read_timeout=TEST_DEADLINE
        ) as http:
            with pytest.raises(UpstreamConnectError) as info:
                await http.request("GET", f"https://{UPSTREAM_NAME}/v2/")
    message = str(info.value)
    assert f"egress proxy 127.0.0.1:{proxy.port}" in message
    assert "403" in message
    assert f"{UPSTREAM_NAME}:443" in message
    assert "topsecret" not in message
    assert info.value.origin == Origin("https", UPSTREAM_NAME, 443)


async def test_unreachable_proxy(client: HttpClient) -> None:
    port = await free_port()
    async with HttpClient(proxy_for=lambda origin: f"http://127.0.0.1:{port}") as http:
        with pytest.raises(UpstreamConnectError, match=f"egress proxy 127.0.0.1:{port}"):
            await http.request("GET", f"https://{UPSTREAM_NAME}/v2/")


async def test_stalled_proxy_is_a_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with serve_proxy({}, stall=True) as proxy:
        http = HttpClient(proxy_for=lambda origin: proxy.url())
        with pytest.raises(UpstreamConnectTimeoutError):
            await http.request("GET", f"https://{UPSTREAM_NAME}/v2/")
        await http.aclose()


async def test_bad_proxy_url_does_not_echo_it() -> None:
    async with HttpClient(proxy_for=lambda origin: "socks5://u:hush@proxy:1080") as http:
        with pytest.raises(LocalProtocolError) as info:
            await http.request("GET", "https://registry.test/v2/")
    assert "hush" not in str(info.value)


# --- secrets stay out of messages ---------------------------------------------------


async def test_malformed_authorization_header_is_not_echoed(client: HttpClient) -> None:
    with pytest.raises(LocalProtocolError) as info:
        await client.request(
            "GET", "http://127.0.0.1:1/", [("Authorization", "Bearer t0k\r\nX: y")]
        )
    assert "t0k" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "target"),
    [
        ("https://Registry-1.Docker.IO/v2/", Origin("https", "registry-1.docker.io", 443), "/v2/"),
        ("http://127.0.0.1:5000", Origin("http", "127.0.0.1", 5000), "/"),
        ("https://u:p@quay.io/v2/x?a=1&b=2#frag", Origin("https", "quay.io", 443), "/v2/x?a=1&b=2"),
        ("http://[::1]:8080/p", Origin("http", "::1", 8080), "/p"),
        ("https://host/a b/\xe9", Origin("https", "host", 443), "/a%20b/%C3%A9"),
        ("https://host/%2Fkeep", Origin("https", "host", 443), "/%2Fkeep"),
        ("https://b\xfccher.test/", Origin("https", "xn--bcher-kva.test", 443), "/"),
    ],
)
def test_parse_url(url: str, origin: Origin, target: str) -> None:
    assert parse_url(url) == (origin, target)
    assert Origin.from_url(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "https:///x",
        "https://host:99999/",
        "https://host:0/",
        "//host/x",
        "",
        "https://[::1/",
        "https://a..b/",
        "https://ho st/",
    ],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_url(url)


def test_origin_text() -> None:
    assert str(Origin("https", "quay.io", 443)) == "https://quay.io"
    assert str(Origin("http", "::1", 5000)) == "http://[::1]:5000"
    assert Origin("https", "quay.io", 443).host_port == "quay.io:443"
    assert Origin("http", "::1", 80).authority == "[::1]"


@pytest.mark.parametrize(
    ("location", "resolved"),
    [
        ("https://cdn.test/blob?sig=1", "https://cdn.test/blob?sig=1"),
        (
            "/artifacts-downloads/namespaces/x/downloads/tok",
            "https://us-docker.pkg.dev/artifacts-downloads/namespaces/x/downloads/tok",
        ),
        ("data?x=1", "https://us-docker.pkg.dev/v2/p/r/blobs/data?x=1"),
        ("../manifests/latest", "https://us-docker.pkg.dev/v2/p/r/manifests/latest"),
        ("//storage.test/bucket/x", "https://storage.test/bucket/x"),
        ("  /padded ", "https://us-docker.pkg.dev/padded"),
    ],
)
def test_resolve_location(location: str, resolved: str) -> None:
    base = "https://us-docker.pkg.dev/v2/p/r/blobs/sha256:abc"
    assert resolve_location(base, location) == resolved


@pytest.mark.parametrize("location", ["", "   ", "ftp://x/y", "https://[bad/"])
def test_resolve_location_refuses(location: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        resolve_location("https://registry.test/v2/x", location)


_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
hosts = st.lists(st.text(_LABEL_CHARS, min_size=1, max_size=10), min_size=1, max_size=4).map(
    ".".join
)
paths = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,;=", max_size=12),
    max_size=5,
).map(lambda parts: "/" + "/".join(parts))
queries = st.text("abcdefghijklmnopqrstuvwxyz0123456789=&%", max_size=30)


@settings(deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=hosts,
    port=st.integers(1, 65535),
    path=paths,
    query=queries,
)
def test_parse_url_round_trip(scheme: str, host: str, port: int, path: str, query: str) -> None:
    url = f"{scheme}://{host}:{port}{path}" + (f"?{query}" if query else "")
    origin, target = parse_url(url)
    assert origin == Origin(scheme, host, port)
    assert target == path + (f"?{query}" if query else "")
    assert parse_url(f"{origin}{target}") == (origin, target)


@settings(deadline=None)
@given(st.text(max_size=80))
def test_parse_url_raises_only_our_errors(text: str) -> None:
    try:
        origin, target = parse_url(text)
    except RegcacheError as exc:
        assert isinstance(exc, UpstreamError)
    else:
        assert target.startswith("/")
        assert target.isascii() and " " not in target
        assert origin.scheme in ("http", "https")


@settings(deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_resolve_location_raises_only_our_errors(base: str, location: str) -> None:
    try:
        resolved = resolve_location("https://registry.test/v2/" + base, location)
    except RegcacheError as exc:
        assert isinstance(exc, UpstreamError)
    else:
        parse_url(resolved)


@settings(deadline=None)
@given(st.text(max_size=60))
def test_resolve_location_keeps_the_base_origin_for_paths(path: str) -> None:
    location = "/v2/" + urllib.parse.quote(path)
    resolved = resolve_location("https://registry.test:8443/v2/x", location)
    assert Origin.from_url(resolved) == Origin("https", "registry.test", 8443)


# --- in-memory responses -------------------------------------------------------------


async def test_response_from_bytes() -> None:
    body = b"z" * (RECEIVE_CHUNK_BYTES + 10)
    response = UpstreamResponse.from_bytes(
        200, [("Docker-Content-Digest", "sha256:x")], body, url="https://r.test/v2/"
    )
    assert response.header("docker-content-digest") == "sha256:x"
    assert len(await response.read_chunk()) == RECEIVE_CHUNK_BYTES
    assert await response.read_chunk() == b"z" * 10
    assert await response.read_chunk() == b""
    small = UpstreamResponse.from_bytes(200, [("Content-Length", "3")], b"abc")
    with pytest.raises(UpstreamProtocolError):
        await small.read_all(2)
    await small.aclose()
