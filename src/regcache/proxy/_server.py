"""The HTTP/1.1 server loop both front ends share: h11 over a trio stream.

A handler turns a :class:`Request` into a :class:`Reply`; this module only
moves bytes. A reply body is small bytes, a file region (sent with
``os.sendfile`` when the stream is a plain socket), or a producer that writes
chunks as they arrive from an in-flight upstream fetch. A producer that fails
part way cuts the connection: the client sees a short body, never a complete
one with bad content.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import attrs
import h11
import trio

from regcache._metrics import record_request
from regcache.core import ErrorCode, RegcacheError, RemoteProtocolError, error_body

log = logging.getLogger("regcache.access")
errlog = logging.getLogger("regcache.proxy")

#: Largest request head accepted. Registry requests are small; this bounds
#: the memory a client can make us hold before we have seen a full request.
MAX_REQUEST_HEAD = 64 * 1024

#: How long an idle keep-alive connection is kept open, and how long a client
#: may take to send a request head once it started.
KEEP_ALIVE_TIMEOUT = 75.0

#: The largest request body read (and discarded) to keep a connection usable
#: after refusing an upload; bigger ones make us close the connection instead.
MAX_DISCARDED_BODY = 1024 * 1024

#: Chunk size for files over streams that cannot sendfile (TLS): large, so
#: the per-chunk Python work is noise next to the encryption.
FILE_CHUNK = 1024 * 1024

#: One sendfile call moves at most this much; bounded so one fast client
#: cannot hold the event loop for long.
SENDFILE_CHUNK = 8 * 1024 * 1024

#: How long, and how much, a closing connection keeps reading what the client
#: still sends (the rest of a refused upload, a pipelined request) after our
#: last byte. Closing with unread input makes the kernel answer with a reset,
#: which may destroy our last response before the client has read it (RFC 9112
#: section 9.6); bounded so a client cannot keep the connection by sending.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 1024 * 1024

SERVER_NAME = "regcache"


@attrs.frozen
class Request:
    """One HTTP request as a handler sees it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    client: str
    #: The host the client asked for (CONNECT mode), else None.
    host: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header (``name`` lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of a header (``name`` lower case)."""
        return [value for key, value in self.headers if key == name]


@attrs.frozen
class FileBody:
    """A byte region of a file, sent zero-copy where the stream allows.

    The file is opened before the response head is sent, and an open file
    keeps its bytes readable even if the cache evicts the blob meanwhile.
    ``file``, when given, is already open on ``path`` and is used (and
    closed) instead.
    """

    path: str
    offset: int
    length: int
    file: BinaryIO | None = attrs.field(default=None, eq=False)


#: Writes a body through the callable it is given; raising cuts the connection.
Producer = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]

#: Writes a body as (fd, offset, count) file spans through the callable it
#: is given; raising cuts the connection.
SpanProducer = Callable[[Callable[[int, int, int], Awaitable[None]]], Awaitable[None]]


@attrs.frozen
class StreamBody:
    """A body of known length produced chunk by chunk.

    ``spans``, when given, produces the same body as spans of an open file
    (fd, offset, count), which a plain socket sends with os.sendfile: an
    in-flight blob followed by many clients costs no copies in Python.
    """

    length: int
    produce: Producer
    spans: SpanProducer | None = None


@attrs.frozen
class Reply:
    """What a handler answers. ``body`` is bytes, a file region or a producer."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | FileBody | StreamBody = b""
    #: For the access log: the registry and how the cache answered.
    registry: str = "-"
    cache: str = "-"
    #: The Content-Length a HEAD answer announces (it sends no body).
    content_length: int | None = None
    #: For the metrics: what kind of request this answers (``manifest``,
    #: ``blob``, ...; see :data:`regcache._metrics.ROUTE_KINDS`).
    route: str = "other"

    @property
    def length(self) -> int:
        """The body length, for Content-Length."""
        if self.content_length is not None:
            return self.content_length
        if isinstance(self.body, bytes):
            return len(self.body)
        return self.body.length


def error_reply(error: RemoteProtocolError, registry: str = "-") -> Reply:
    """An OCI error JSON reply for ``error``."""
    return Reply(
        error.status,
        (("Content-Type", "application/json"), *error.headers),
        error.to_body(),
        registry=registry,
        cache="-",
    )


Handler = Callable[[Request], Awaitable[Reply]]

#: Takes over a connection whose request was CONNECT: it answers through the
#: h11 connection and then owns the stream until it returns.
ConnectHandler = Callable[[h11.Connection, trio.abc.Stream, Request], Awaitable[None]]


class _Sent:
    """Stands in for body bytes already sent by sendfile, so h11 counts them."""

    __slots__ = ("_length",)

    def __init__(self, length: int) -> None:
        self._length = length

    def __len__(self) -> int:
        return self._length


class ConnectionCut(Exception):
    """The connection had to be closed in the middle of a reply."""


async def serve_http(
    stream: trio.abc.Stream,
    handler: Handler,
    *,
    client: str,
    host: str | None = None,
    on_connect: ConnectHandler | None = None,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the client goes away.

    ``host`` is the host the client reached (inside an intercepted tunnel).
    A CONNECT request is handed to ``on_connect``, or refused without one.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        while True:
            request = await _read_request(conn, stream, client, host)
            if request is None:
                return
            if request.method == "CONNECT" and on_connect is not None:
                await on_connect(conn, stream, request)
                return
            started = time.monotonic()
            reply = await _dispatch(handler, request)
            sent = 0
            try:
                sent = await _send_reply(conn, stream, reply, head=request.method == "HEAD")
            finally:
                elapsed = time.monotonic() - started
                record_request(reply.route, reply.status, sent, reply.cache, elapsed)
                if log.isEnabledFor(logging.INFO):
                    _log_access(client, request, reply, sent, elapsed)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionCut, trio.TooSlowError):
        return
    except h11.ProtocolError as exc:
        errlog.debug("%s: HTTP protocol error: %s", client, exc)
    except OSError as exc:
        errlog.debug("%s: connection error: %s", client, exc)
    finally:
        await _close(stream)


def _log_access(client: str, request: Request, reply: Reply, sent: int, elapsed: float) -> None:
    target = _loggable_target(request.target)
    ms = round(elapsed * 1000, 1)
    log.info(
        "%s %s %s %s %d %d %s %.1fms",
        client,
        request.method,
        target,
        reply.registry,
        reply.status,
        sent,
        reply.cache,
        ms,
        # The same fields for structured (JSON) logs; no header is logged.
        extra={
            "access": {
                "client": client,
                "method": request.method,
                "target": target,
                "registry": reply.registry,
                "status": reply.status,
                "bytes": sent,
                "cache": reply.cache,
                "ms": ms,
            }
        },
    )


def _loggable_target(target: str) -> str:
    """The request target as logged: bounded, and without userinfo.

    An absolute-form target (a plain proxy request) may carry a user name and
    password (``http://user:secret@host/...``); the log gets the rest.
    """
    if "@" in target and "://" in target:
        scheme, _, rest = target.partition("://")
        authority, slash, path = rest.partition("/")
        target = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return target[:300]


async def _close(stream: trio.abc.Stream) -> None:
    try:
        # Unshielded: at shutdown the linger is skipped, the close is not.
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await _linger(stream)
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(1),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            await stream.aclose()


async def _linger(stream: trio.abc.HalfCloseableStream) -> None:
    with (
        trio.move_on_after(LINGER_SECONDS),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
    ):
        await stream.send_eof()
        drained = 0
        while drained < LINGER_BYTES:
            data = await stream.receive_some(64 * 1024)
            if not data:
                return
            drained += len(data)


async def _read_request(
    conn: h11.Connection, stream: trio.abc.Stream, client: str, host: str | None
) -> Request | None:
    head: h11.Request | None = None
    discarded = 0
    with trio.fail_after(KEEP_ALIVE_TIMEOUT):
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await _send_protocol_error(conn, stream, exc)
                return None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(64 * 1024)
                conn.receive_data(bytes(data))
                continue
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                # Uploads are refused; read a small body so the connection
                # stays usable, give up on big ones.
                discarded += len(event.data)
                if discarded > MAX_DISCARDED_BODY:
                    break
            elif isinstance(event, h11.EndOfMessage):
                break
    if head is None:
        return None
    return Request(
        method=head.method.decode("ascii", "replace"),
        target=head.target.decode("latin-1"),
        headers=tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers),
        client=client,
        host=host,
    )


async def _send_protocol_error(
    conn: h11.Connection, stream: trio.abc.Stream, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint
    body = error_body(ErrorCode.UNKNOWN, f"malformed HTTP request: {exc}")
    response = h11.Response(
        status_code=status,
        headers=[
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Server", SERVER_NAME),
        ],
    )
    with contextlib.suppress(h11.LocalProtocolError):
        await stream.send_all(
            conn.send(response) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        )


async def _dispatch(handler: Handler, request: Request) -> Reply:
    try:
        return await handler(request)
    except RemoteProtocolError as exc:
        return error_reply(exc)
    except RegcacheError as exc:
        errlog.error("%s %s: %s", request.method, _loggable_target(request.target), exc)
        return error_reply(RemoteProtocolError(ErrorCode.UNKNOWN, str(exc)))
    except Exception:  # a bug in one request must not take the listener down
        errlog.exception("%s %s: internal error", request.method, _loggable_target(request.target))
        return error_reply(RemoteProtocolError(ErrorCode.UNKNOWN, "internal error"))


async def _send_reply(
    conn: h11.Connection, stream: trio.abc.Stream, reply: Reply, *, head: bool
) -> int:
    body = reply.body
    fd = None
    try:
        if isinstance(body, FileBody) and not head:
            try:
                fd = _open_body(body)
            except ConnectionCut:
                # Nothing is sent yet: say so instead of cutting.
                gone = RemoteProtocolError(
                    ErrorCode.UNAVAILABLE, "the cached blob went away; try again"
                )
                return await _send_message(conn, stream, error_reply(gone), head=head, fd=None)
        return await _send_message(conn, stream, reply, head=head, fd=fd)
    finally:
        if fd is not None:
            os.close(fd)
        if isinstance(body, FileBody) and body.file is not None:
            body.file.close()  # not sent (HEAD, or the client left first)


async def _send_message(
    conn: h11.Connection, stream: trio.abc.Stream, reply: Reply, *, head: bool, fd: int | None
) -> int:
    headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(reply.length)))
    headers.append(("Server", SERVER_NAME))
    if conn.their_state is not h11.DONE:
        headers.append(("Connection", "close"))
    response_head = conn.send(h11.Response(status_code=reply.status, headers=headers))
    body = reply.body
    if head or isinstance(body, bytes):
        # Small answers (manifests, errors, HEAD) go out in one write.
        data = response_head
        sent = 0
        if isinstance(body, bytes) and body and not head:
            data += conn.send(h11.Data(data=body))
            sent = len(body)
        await stream.send_all(data + conn.send(h11.EndOfMessage()))
        return sent
    await stream.send_all(response_head)
    if isinstance(body, FileBody):
        assert fd is not None
        sent = await _send_file(conn, stream, body, fd)
    else:
        sent = await _send_stream(conn, stream, body)
    await stream.send_all(conn.send(h11.EndOfMessage()))
    return sent


def _open_body(body: FileBody) -> int:
    """An fd for a file body, opened before anything is sent (see FileBody)."""
    if body.file is not None:
        fd = os.dup(body.file.fileno())
        body.file.close()
        return fd
    try:
        return os.open(body.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        errlog.error("cannot open cached blob %s: %s", body.path, exc)
        raise ConnectionCut from exc


async def _send_file(conn: h11.Connection, stream: trio.abc.Stream, body: FileBody, fd: int) -> int:
    if isinstance(stream, trio.SocketStream):
        await _sendfile(stream, fd, body.offset, body.length)
        conn.send_with_data_passthrough(h11.Data(data=_Sent(body.length)))  # type: ignore[arg-type]
    else:
        # One buffer for the whole body, read into and handed to the stream
        # as a view: no new bytes object and no h11 copy per chunk.
        buffer = bytearray(min(FILE_CHUNK, body.length))
        view = memoryview(buffer)
        position, end = body.offset, body.offset + body.length
        while position < end:
            count = os.preadv(fd, [view[: min(len(view), end - position)]], position)
            if not count:
                raise ConnectionCut("cached blob shorter than its size")
            chunk = view[:count]
            pieces = conn.send_with_data_passthrough(h11.Data(data=chunk))  # type: ignore[arg-type]
            for piece in pieces or ():
                await stream.send_all(piece)
            position += count
    return body.length


async def _sendfile(stream: trio.SocketStream, fd: int, offset: int, count: int) -> None:
    sock = stream.socket
    out_fd = sock.fileno()
    end = offset + count
    while offset < end:
        try:
            sent = os.sendfile(out_fd, fd, offset, min(SENDFILE_CHUNK, end - offset))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                raise ConnectionCut from exc
            raise
        if sent == 0:
            raise ConnectionCut("the file ended before its size")
        offset += sent
        await trio.lowlevel.checkpoint()


async def _send_stream(conn: h11.Connection, stream: trio.abc.Stream, body: StreamBody) -> int:
    sent = 0

    async def send(chunk: bytes) -> None:
        nonlocal sent
        await stream.send_all(conn.send(h11.Data(data=chunk)))
        sent += len(chunk)

    async def send_span(fd: int, offset: int, count: int) -> None:
        nonlocal sent
        assert isinstance(stream, trio.SocketStream)
        await _sendfile(stream, fd, offset, count)
        # h11 counts the bytes; the object stands in for what sendfile sent.
        conn.send_with_data_passthrough(h11.Data(data=_Sent(count)))  # type: ignore[arg-type]
        sent += count

    try:
        if body.spans is not None and isinstance(stream, trio.SocketStream):
            await body.spans(send_span)
        else:
            await body.produce(send)
    except RegcacheError as exc:
        errlog.warning("cutting a reply after %d of %d bytes: %s", sent, body.length, exc)
        raise ConnectionCut from exc
    return sent
