"""The upstream HTTP/1.1 client: h11 over trio, with TLS, keep-alive and an egress proxy.

Everything regcache fetches from an upstream goes through :class:`HttpClient`.
It speaks HTTP/1.1 only (RFC 9112) by wrapping ``h11.Connection``; keeps idle
connections per origin for reuse (RFC 9112 section 9.3); reaches origins
through an egress proxy with CONNECT (RFC 9110 section 9.3.6) and h11's
switched-protocol hand-off; and resolves ``Location`` references per RFC 3986
section 5 (RFC 9110 section 10.2.2). It knows nothing of registries.

This is a driver: trio, ssl and socket exceptions are translated here, once,
into :class:`UpstreamError` and its subclasses. Messages name hosts and ports
only: never header values, URL userinfo or query strings (signed blob URLs
carry credentials in their queries).
"""

from __future__ import annotations

import contextlib
import logging
import select
import ssl
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Final, Protocol

import attrs
import h11
import trio

from regcache import __version__
from regcache._streams import PrefixedStream
from regcache.core._errors import LocalProtocolError

from ._url import (
    Origin,
    UpstreamConnectError,
    UpstreamConnectTimeoutError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    _PoolKey,
    _Proxy,
    _truncated,
    parse_url,
    resolve_location,
)

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "IDEMPOTENT_METHODS",
    "RECEIVE_CHUNK_BYTES",
    "USER_AGENT",
    "HttpClient",
    "Origin",
    "UpstreamConnectError",
    "UpstreamConnectTimeoutError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeoutError",
    "parse_url",
    "resolve_location",
]

log = logging.getLogger(__name__)

USER_AGENT: Final = f"regcache/{__version__}"

# Bytes asked of the socket per receive. Large enough that a blob streams with
# little per-chunk work; it also bounds the body held in memory per chunk.
RECEIVE_CHUNK_BYTES: Final = 256 * 1024

# Bodies of at least this many bytes (blobs) are read around h11, in pieces of
# up to RAW_BODY_CHUNK; see _ConnectionBody. Smaller ones keep the connection
# reusable, which matters more for them than the copies.
RAW_BODY_THRESHOLD: Final = 1024 * 1024
RAW_BODY_CHUNK: Final = 1024 * 1024
# How long a piece of such a body received over TLS waits for the next ones
# (see _Connection._receive_batch): short next to any pull, long next to the
# time a fast upstream takes to send RAW_BODY_CHUNK.
BATCH_SECONDS: Final = 0.005
# Bound on a response header block. Real registries send big ones (Google
# Artifact Registry about 21 KiB); the bound protects memory from a peer that
# never ends its header block.
DEFAULT_MAX_HEADER_BYTES: Final = 128 * 1024
# 1xx answers skipped before a final response: a peer sending them forever
# would otherwise hold a request open past every timeout.
MAX_INFORMATIONAL_RESPONSES: Final = 16

# Methods that may be replayed on a fresh connection when a pooled one turns
# out to have been closed by the server before it answered (RFC 9110 9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD"})
# Methods whose requests carry Content-Length even when the body is empty;
# some servers answer 411 otherwise.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


def _describe(exc: BaseException) -> str:
    """A short reason for a network failure, for a message naming the peer."""
    cause: BaseException = exc
    # trio wraps the real failure (an SSLError or OSError) in BrokenResourceError.
    while isinstance(cause, trio.BrokenResourceError) and cause.__cause__ is not None:
        cause = cause.__cause__
    # trio.open_tcp_stream: "all attempts failed", the reasons in a group.
    group = cause.__cause__
    if isinstance(group, BaseExceptionGroup) and group.exceptions:
        cause = group.exceptions[0]
    if isinstance(cause, ssl.SSLCertVerificationError):
        text = f"certificate verify failed: {cause.verify_message}"
    elif isinstance(cause, ssl.SSLError):
        text = f"TLS error: {cause.reason or cause}"
    elif isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    elif isinstance(cause, trio.ClosedResourceError):
        text = "connection closed"
    elif isinstance(cause, trio.BrokenResourceError):
        text = "connection broken"
    else:
        text = str(cause) or type(cause).__name__
    return _truncated(text)


_NETWORK_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@attrs.define(eq=False)
class _Connection:
    """One HTTP/1.1 connection: a stream, its h11 state, and timeouts."""

    stream: trio.abc.Stream
    protocol: h11.Connection
    key: _PoolKey
    # How messages name the peer: "upstream host:port" or "egress proxy ...".
    peer: str
    read_timeout: float
    idle_since: float = 0.0
    # Bytes received since the current request was sent: zero means the peer
    # answered nothing, which makes a replay safe for idempotent methods.
    received: int = 0

    @property
    def origin(self) -> Origin:
        return self.key[0]

    async def send(self, event: h11.Event) -> None:
        try:
            data = self.protocol.send(event)
        except h11.LocalProtocolError:
            # h11's message may quote a header value (a credential).
            raise LocalProtocolError(f"malformed request for {self.peer}") from None
        if not data:
            return
        try:
            with trio.fail_after(self.read_timeout):
                await self.stream.send_all(data)
        except trio.TooSlowError as exc:
            raise UpstreamTimeoutError(
                f"{self.peer} did not accept the request in {self.read_timeout:g} s",
                origin=self.origin,
            ) from exc
        except _NETWORK_ERRORS as exc:
            raise UpstreamProtocolError(
                f"sending to {self.peer} failed: {_describe(exc)}", origin=self.origin
            ) from exc

    async def next_event(self, *, head_limit: int | None = None) -> h11.Event:
        """The next event from the peer, receiving as needed.

        With ``head_limit``, no more than that many bytes (plus one) are taken
        from the socket since the request, so h11 sees an oversized header
        block as incomplete and refuses it even when it arrives in one piece.
        """
        while True:
            try:
                event = self.protocol.next_event()
            except h11.RemoteProtocolError as exc:
                if head_limit is not None and self.received > head_limit:
                    raise self._head_too_large(head_limit) from exc
                raise UpstreamProtocolError(
                    f"{self.peer} sent a malformed response: {_truncated(str(exc))}",
                    origin=self.origin,
                ) from exc
            if event is h11.PAUSED:
                raise UpstreamProtocolError(
                    f"{self.peer} sent data after its response", origin=self.origin
                )
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            max_bytes = RECEIVE_CHUNK_BYTES
            if head_limit is not None:
                max_bytes = min(max_bytes, head_limit + 1 - self.received)
                if max_bytes <= 0:
                    raise self._head_too_large(head_limit)
            self.protocol.receive_data(await self._receive(max_bytes))

    def _head_too_large(self, head_limit: int) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"{self.peer} sent a response header block over {head_limit} bytes",
            origin=self.origin,
        )

    async def _receive(self, max_bytes: int) -> bytes:
        with self._receiving():
            data = await self.stream.receive_some(max_bytes)
        if not data and self.received == 0:
            raise UpstreamProtocolError(
                f"{self.peer} closed the connection without answering", origin=self.origin
            )
        self.received += len(data)
        return data if isinstance(data, bytes) else bytes(data)

    async def _receive_into(self, buffer: bytearray, max_bytes: int) -> memoryview:
        """Receive into ``buffer`` (plain TCP only): no new bytes object per piece."""
        stream = self.stream
        assert isinstance(stream, trio.SocketStream)
        with self._receiving():
            count = await stream.socket.recv_into(buffer, max_bytes)
        self.received += count
        return memoryview(buffer)[:count]

    async def _receive_batch(self, buffer: bytearray, max_bytes: int) -> memoryview:
        """Gather pieces into ``buffer`` until it holds ``max_bytes`` or the
        upstream pauses for :data:`BATCH_SECONDS`.

        For TLS, where every receive yields one record (16 KiB at most): a
        megabyte then costs one write, one hash update and one wake-up of the
        followers instead of sixty-four. Cancelling a receive after the
        handshake loses nothing (trio's SSLStream receives atomically).
        """
        view = memoryview(buffer)
        with self._receiving():
            piece = await self.stream.receive_some(max_bytes)
            filled = len(piece)
            view[:filled] = piece
            with trio.move_on_after(BATCH_SECONDS):
                while piece and filled < max_bytes:
                    piece = await self.stream.receive_some(max_bytes - filled)
                    view[filled : filled + len(piece)] = piece
                    filled += len(piece)
        self.received += filled
        return view[:filled]

    @contextlib.contextmanager
    def _receiving(self) -> Iterator[None]:
        """The read timeout, and network errors as upstream errors."""
        try:
            with trio.fail_after(self.read_timeout):
                yield
        except trio.TooSlowError as exc:
            raise UpstreamTimeoutError(
                f"{self.peer} sent nothing for {self.read_timeout:g} s", origin=self.origin
            ) from exc
        except _NETWORK_ERRORS as exc:
            raise UpstreamProtocolError(
                f"connection to {self.peer} broke: {_describe(exc)}", origin=self.origin
            ) from exc

    def reusable(self) -> bool:
        """True once a request and its response completed on a keep-alive connection."""
        protocol = self.protocol
        if protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
            return False
        leftover, closed = protocol.trailing_data
        return not leftover and not closed

    def looks_dead(self) -> bool:
        """True when an idle connection has something to read: EOF, a reset or stray bytes."""
        stream = self.stream
        while True:
            if isinstance(stream, PrefixedStream) and stream.has_prefix:
                return True
            inner = getattr(stream, "transport_stream", None)
            if not isinstance(inner, trio.abc.Stream):
                break
            stream = inner
        if not isinstance(stream, trio.SocketStream) or not hasattr(select, "poll"):
            return False
        try:
            poller = select.poll()
            poller.register(stream.socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def aclose(self) -> None:
        # Forceful: with https_compatible TLS no close_notify is owed, and a
        # graceful close could block on a peer that stopped reading.
        await trio.aclose_forcefully(self.stream)


class _BodySource(Protocol):
    async def next_chunk(self) -> bytes | memoryview: ...

    async def close(self) -> None: ...


@attrs.define(eq=False)
class _ConnectionBody:
    """A response body read from a connection, which goes back to the pool at its end.

    A large body of known length (a blob) is read around h11 once what h11
    already buffered is out: h11 copies every received piece into and out of
    its buffer, which was a third of a cold pull's CPU. h11 then never sees
    the end of that message, so the connection is closed, not pooled: one
    reconnect per large blob. Such a body is received into one reused buffer,
    and each piece is a view of it, valid until the next call: over plain TCP
    with recv_into (a new 1 MiB bytes object per piece cost a fifth of a cold
    pull), over TLS by gathering records (one per receive, at most 16 KiB) for
    up to BATCH_SECONDS, which made cold pulls from TLS upstreams ~3x faster.
    """

    client: HttpClient
    connection: _Connection | None
    closed: bool = False
    #: For a body read around h11: the bytes still to come (None: h11 reads).
    raw_length: int | None = None
    _raw_started: bool = False
    _buffer: bytearray | None = None

    async def next_chunk(self) -> bytes | memoryview:
        conn = self.connection
        if conn is None:
            if self.closed:
                raise LocalProtocolError("the upstream response was closed before its end")
            return b""
        if self.raw_length is not None:
            return await self._next_raw_chunk(conn)
        try:
            chunk = await _next_body_chunk(conn)
        except BaseException:
            self.connection = None
            self.closed = True
            await conn.aclose()
            raise
        if not chunk:
            self.connection = None
            await self.client._release(conn)
        return chunk

    async def _next_raw_chunk(self, conn: _Connection) -> bytes | memoryview:
        try:
            data = await self._read_raw(conn)
        except BaseException:
            self.connection = None
            self.closed = True
            await conn.aclose()
            raise
        if not data:
            self.connection = None
            await conn.aclose()  # h11 did not see the end: not reusable
        return data

    async def _read_raw(self, conn: _Connection) -> bytes | memoryview:
        assert self.raw_length is not None
        if not self._raw_started:
            self._raw_started = True
            # What h11 holds already, in one piece (it never needs data here).
            event = conn.protocol.next_event()
            if isinstance(event, h11.Data) and event.data:
                self.raw_length -= len(event.data)
                return bytes(event.data)
        if self.raw_length <= 0:
            return b""
        count = min(RAW_BODY_CHUNK, self.raw_length)
        if self._buffer is None:
            self._buffer = bytearray(RAW_BODY_CHUNK)
        if isinstance(conn.stream, trio.SocketStream):
            data = await conn._receive_into(self._buffer, count)
        else:
            data = await conn._receive_batch(self._buffer, count)
        if not data:
            raise UpstreamProtocolError(
                f"{conn.peer} closed the connection {self.raw_length} bytes before"
                " the end of the body",
                origin=conn.origin,
            )
        self.raw_length -= len(data)
        return data

    async def close(self) -> None:
        conn = self.connection
        if conn is None:
            return
        self.connection = None
        if self.raw_length is not None:
            self.closed = True
            await conn.aclose()
            return
        # The caller may have stopped after the last byte it expected; if h11
        # already holds the end of the message, the connection is reusable.
        try:
            while True:
                event = conn.protocol.next_event()
                if not (isinstance(event, h11.Data) and not event.data):
                    break
        except h11.RemoteProtocolError:
            event = None
        if isinstance(event, h11.EndOfMessage):
            await self.client._release(conn)
        else:
            self.closed = True
            await conn.aclose()


def _raw_body_length(method: bytes, response: h11.Response) -> int | None:
    """The length of a body worth reading around h11 (see _ConnectionBody), or None."""
    if method == b"HEAD" or response.status_code in (204, 304):
        return None
    lengths = [value for name, value in response.headers if name == b"content-length"]
    chunked = any(name == b"transfer-encoding" for name, _ in response.headers)
    if chunked or len(lengths) != 1 or not lengths[0].isdigit():
        return None
    length = int(lengths[0])
    return length if length >= RAW_BODY_THRESHOLD else None


async def _next_body_chunk(conn: _Connection) -> bytes:
    """The next non-empty piece of the body, or ``b""`` at its end."""
    while True:
        event = await conn.next_event()
        if isinstance(event, h11.Data):
            if event.data:
                return bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return b""
        else:
            raise UpstreamProtocolError(
                f"{conn.peer} ended the response unexpectedly", origin=conn.origin
            )


@attrs.define(eq=False)
class _BytesBody:
    chunks: list[bytes]

    async def next_chunk(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def close(self) -> None:
        self.chunks.clear()
        await trio.lowlevel.checkpoint()


class UpstreamResponse:
    """A response head, and its body to be read in chunks.

    Read the body to its end (``read_chunk`` returning ``b""``, or
    ``read_all``) and the connection goes back to the pool at once; ``aclose``
    (or leaving ``async with``) closes a connection whose body was not read
    to the end. ``aclose`` is idempotent and always safe to call.
    """

    def __init__(
        self,
        *,
        status: int,
        reason: bytes,
        headers: tuple[tuple[str, str], ...],
        url: str,
        body: _BodySource,
        body_follows: bool = True,
    ) -> None:
        self.status = status
        self.reason = reason
        # Names lower-cased, values latin-1 decoded, in the order received.
        self.headers = headers
        # The URL requested (not the one a redirect points to).
        self.url = url
        self._body = body
        # False for answers to HEAD and for 204 and 304, whose Content-Length
        # describes a body that is not sent (RFC 9110 section 8.6).
        self._body_follows = body_follows

    @classmethod
    def from_bytes(
        cls,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        url: str = "",
        reason: bytes = b"",
    ) -> UpstreamResponse:
        """A response held in memory, as if read from an upstream (for tests and fakes)."""
        chunks = [
            body[i : i + RECEIVE_CHUNK_BYTES] for i in range(0, len(body), RECEIVE_CHUNK_BYTES)
        ]
        return cls(
            status=status,
            reason=reason,
            headers=tuple((name.lower(), value) for name, value in headers),
            url=url,
            body=_BytesBody(chunks),
        )

    def header(self, name: str) -> str | None:
        """The first value of a header, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, one per header line, commas not split."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def content_length(self) -> int | None:
        """The Content-Length header (also on HEAD answers), None when absent or chunked."""
        value = self.header("content-length")
        if value is None or self.header("transfer-encoding") is not None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    async def read_chunk(self) -> bytes | memoryview:
        """The next piece of the body as received; empty at its end.

        A memoryview is valid only until the next call (see _ConnectionBody).
        """
        return await self._body.next_chunk()

    async def read_all(self, limit: int) -> bytes:
        """The whole body; :class:`UpstreamProtocolError` if it is over ``limit`` bytes."""
        length = self.content_length
        if self._body_follows and length is not None and length > limit:
            await self.aclose()
            raise self._too_large(limit)
        parts: list[bytes] = []
        total = 0
        while chunk := await self.read_chunk():
            total += len(chunk)
            if total > limit:
                await self.aclose()
                raise self._too_large(limit)
            parts.append(bytes(chunk))  # a view is only good until the next read
        return b"".join(parts)

    def _too_large(self, limit: int) -> UpstreamProtocolError:
        try:
            origin: Origin | None = Origin.from_url(self.url)
        except UpstreamError:
            origin = None
        where = origin.host_port if origin is not None else "upstream"
        return UpstreamProtocolError(
            f"response body from {where} is over the limit of {limit} bytes", origin=origin
        )

    async def aclose(self) -> None:
        """Give the connection back to the pool, or close it if the body was not all read."""
        await self._body.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} from {_origin_text(self.url)}>"


def _origin_text(url: str) -> str:
    try:
        return str(Origin.from_url(url))
    except UpstreamError:
        return "?"


def _default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class HttpClient:
    """An HTTP/1.1 client for upstreams, with a keep-alive pool per origin and proxy.

    ``ssl_context`` is used for https origins (default: the system's trust
    store, ALPN ``http/1.1``); ``ssl_context_for`` may give another per origin
    (None falls back). ``proxy_for`` names an egress proxy
    (``http://[user:pass@]host:port``) per origin, or None for a direct
    connection. ``connect_timeout`` bounds TCP, proxy CONNECT and TLS
    together; ``read_timeout`` bounds each receive and each send.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_context_for: Callable[[Origin], ssl.SSLContext | None] | None = None,
        proxy_for: Callable[[Origin], str | None] | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 30,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_idle_per_origin: int = 8,
        idle_timeout: float = 60,
    ) -> None:
        self._ssl_context = ssl_context
        self._ssl_context_for = ssl_context_for
        self._proxy_for = proxy_for
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_header_bytes = max_header_bytes
        self._max_idle_per_origin = max_idle_per_origin
        self._idle_timeout = idle_timeout
        self._idle: dict[_PoolKey, list[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        body: bytes = b"",
    ) -> UpstreamResponse:
        """Send one request and return the response once its head has arrived.

        Adds Host, User-Agent and Content-Length unless given. A GET or HEAD
        that fails on a pooled connection before any response byte is replayed
        once on a fresh connection.
        """
        if self._closed:
            raise LocalProtocolError("the upstream HTTP client is closed")
        origin, target = parse_url(url)
        proxy_url = self._proxy_for(origin) if self._proxy_for is not None else None
        key: _PoolKey = (origin, _Proxy.parse(proxy_url) if proxy_url else None)
        request = _build_request(method, origin, target, headers, body)
        replayable = method.upper() in IDEMPOTENT_METHODS
        # Only a pooled connection is ever retried, and the retry is on a
        # fresh one: at most two attempts.
        conn = await self._take_idle(key)
        while True:
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key)
            try:
                return await self._exchange(conn, request, body, url)
            except UpstreamError as exc:
                await conn.aclose()
                stale = conn.received == 0 and not isinstance(exc, UpstreamTimeoutError)
                if not (reused and stale and replayable):
                    raise
                log.debug("%s closed a pooled connection; replaying %s", conn.peer, method)
                conn = None
            except BaseException:
                await conn.aclose()
                raise

    async def _exchange(
        self, conn: _Connection, request: h11.Request, body: bytes, url: str
    ) -> UpstreamResponse:
        conn.received = 0
        await conn.send(request)
        if body:
            await conn.send(h11.Data(data=body))
        await conn.send(h11.EndOfMessage())
        response = await _receive_head(conn, self._max_header_bytes)
        return UpstreamResponse(
            status=response.status_code,
            reason=bytes(response.reason),
            headers=tuple(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in response.headers
            ),
            url=url,
            body=_ConnectionBody(
                self,
                conn,
                raw_length=_raw_body_length(request.method, response),
            ),
            body_follows=request.method != b"HEAD" and response.status_code not in (204, 304),
        )

    async def _take_idle(self, key: _PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= self._idle_timeout and not conn.looks_dead():
                return conn
            await conn.aclose()
        return None

    async def _release(self, conn: _Connection) -> None:
        """Put a connection whose response ended back in the pool, or close it."""
        if self._closed or self._max_idle_per_origin <= 0 or not conn.reusable():
            await conn.aclose()
            return
        conn.protocol.start_next_cycle()
        now = trio.current_time()
        conn.idle_since = now
        self._idle.setdefault(conn.key, []).append(conn)
        # Prune every pool here: nothing else runs in the background to do it.
        stale: list[_Connection] = []
        for key, idle in list(self._idle.items()):
            while len(idle) > self._max_idle_per_origin:
                stale.append(idle.pop(0))
            stale.extend(c for c in idle if now - c.idle_since > self._idle_timeout)
            idle[:] = [c for c in idle if now - c.idle_since <= self._idle_timeout]
            if not idle:
                del self._idle[key]
        for old in stale:
            await old.aclose()

    async def _connect(self, key: _PoolKey) -> _Connection:
        origin, proxy = key
        via = f" through egress proxy {proxy.host_port}" if proxy is not None else ""
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await self._open_tcp(origin, proxy)
                try:
                    if proxy is not None:
                        stream = await self._tunnel(stream, origin, proxy)
                    if origin.scheme == "https":
                        stream = await self._start_tls(stream, origin, via)
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except trio.TooSlowError as exc:
            raise UpstreamConnectTimeoutError(
                f"connecting to {origin.host_port}{via} took over {self._connect_timeout:g} s",
                origin=origin,
            ) from exc
        log.debug("connected to %s%s", origin, via)
        return _Connection(
            stream,
            h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_bytes),
            key,
            peer=f"upstream {origin.host_port}",
            read_timeout=self._read_timeout,
        )

    async def _open_tcp(self, origin: Origin, proxy: _Proxy | None) -> trio.abc.Stream:
        host, port = (proxy.host, proxy.port) if proxy is not None else (origin.host, origin.port)
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            where = origin.host_port
            if proxy is not None:
                where = f"egress proxy {proxy.host_port} (for {origin.host_port})"
            raise UpstreamConnectError(
                f"cannot connect to {where}: {_describe(exc)}", origin=origin
            ) from exc

    async def _tunnel(
        self, stream: trio.abc.Stream, origin: Origin, proxy: _Proxy
    ) -> trio.abc.Stream:
        """Ask the proxy for a tunnel to the origin; the stream then carries it."""
        headers = [("Host", origin.host_port), ("User-Agent", USER_AGENT)]
        if proxy.authorization is not None:
            headers.append(("Proxy-Authorization", proxy.authorization))
        protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_bytes)
        peer = f"egress proxy {proxy.host_port}"
        conn = _Connection(stream, protocol, (origin, proxy), peer, self._read_timeout)
        try:
            await conn.send(h11.Request(method="CONNECT", target=origin.host_port, headers=headers))
            await conn.send(h11.EndOfMessage())
            response = await _receive_head(conn, self._max_header_bytes)
        except UpstreamTimeoutError as exc:
            raise UpstreamConnectTimeoutError(
                f"{peer} did not answer CONNECT to {origin.host_port}: {exc.message}",
                origin=origin,
            ) from exc
        except UpstreamError as exc:
            raise UpstreamConnectError(
                f"CONNECT to {origin.host_port} through {peer} failed: {exc.message}",
                origin=origin,
            ) from exc
        if not 200 <= response.status_code < 300:
            reason = _truncated(bytes(response.reason).decode("latin-1"))
            raise UpstreamConnectError(
                f"{peer} refused CONNECT to {origin.host_port}: {response.status_code} {reason}",
                origin=origin,
            )
        # A 2xx switches the connection to the tunnel; bytes h11 read past the
        # response already belong to the origin.
        leftover, _closed = protocol.trailing_data
        return PrefixedStream(stream, leftover) if leftover else stream

    async def _start_tls(
        self, stream: trio.abc.Stream, origin: Origin, via: str
    ) -> trio.SSLStream[trio.abc.Stream]:
        context = None
        if self._ssl_context_for is not None:
            context = self._ssl_context_for(origin)
        if context is None:
            if self._ssl_context is None:
                self._ssl_context = _default_ssl_context()
            context = self._ssl_context
        tls = trio.SSLStream(stream, context, server_hostname=origin.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except (*_NETWORK_ERRORS, ssl.SSLError) as exc:
            raise UpstreamConnectError(
                f"TLS handshake with {origin.host_port}{via} failed: {_describe(exc)}",
                origin=origin,
            ) from exc
        alpn = tls.selected_alpn_protocol()
        if alpn not in (None, "http/1.1"):
            raise UpstreamConnectError(
                f"{origin.host_port} chose {_truncated(alpn)!r} over http/1.1", origin=origin
            )
        return tls

    async def aclose(self) -> None:
        """Close every pooled connection; connections still lent to responses close on release."""
        self._closed = True
        pools, self._idle = self._idle, {}
        for idle in pools.values():
            for conn in idle:
                await conn.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _build_request(
    method: str,
    origin: Origin,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
) -> h11.Request:
    names = {name.lower() for name, _ in headers}
    all_headers: list[tuple[str, str]] = []
    if "host" not in names:
        all_headers.append(("Host", origin.authority))
    all_headers.extend(headers)
    if "user-agent" not in names:
        all_headers.append(("User-Agent", USER_AGENT))
    if (
        (body or method.upper() in _BODY_METHODS)
        and "content-length" not in names
        and "transfer-encoding" not in names
    ):
        all_headers.append(("Content-Length", str(len(body))))
    try:
        return h11.Request(
            method=method.encode("ascii"),
            target=target.encode("ascii"),
            headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in all_headers],
        )
    except (h11.LocalProtocolError, UnicodeError):
        # h11's message quotes the offending value, which may be a credential.
        raise LocalProtocolError(
            f"malformed request for {origin.host_port}: bad method or header"
        ) from None


async def _receive_head(conn: _Connection, max_header_bytes: int) -> h11.Response:
    """The final response head, skipping a bounded number of 1xx answers."""
    for _ in range(MAX_INFORMATIONAL_RESPONSES + 1):
        event = await conn.next_event(head_limit=max_header_bytes)
        if isinstance(event, h11.Response):
            return event
        if not isinstance(event, h11.InformationalResponse):
            raise UpstreamProtocolError(
                f"{conn.peer} closed the connection before its response", origin=conn.origin
            )
    raise UpstreamProtocolError(
        f"{conn.peer} sent over {MAX_INFORMATIONAL_RESPONSES} informational responses",
        origin=conn.origin,
    )
