"""A counting, corrupting, redirecting HTTP relay in front of a registry.

Listens on plain HTTP (so the tests see every byte), forwards each request to
the upstream registry over TLS with the Host header rewritten, and streams the
response back in chunks. It counts requests and body bytes, and on demand
corrupts or cuts blob bodies, answers every request with an error status, or
redirects blob GETs (307) to a "CDN" listener on another loopback address that
serves the blob from the upstream without the client's credentials, the way
Docker Hub or quay.io hand blobs to a CDN with a signed URL.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs

from ._server import QuietHandler, ServerThread, Startable, TrackingServer, format_host

# Bodies move in pieces of this size; one buffer per connection.
RELAY_CHUNK = 256 * 1024

# Bound on waiting for the upstream (connect and each read).
UPSTREAM_TIMEOUT = 60.0

# Request headers that belong to one connection and are not forwarded
# (RFC 9110 section 7.6.1), plus Expect: this server answers 100-continue.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
        "host",
    }
)

BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]{32,})$")
CDN_PATH = re.compile(r"^/cdn/(?P<digest>[a-z0-9]+:[0-9a-f]{32,})$")

Side = Literal["registry", "cdn"]


@attrs.frozen
class RelayRequest:
    """One request the relay (side ``registry``) or its CDN (``cdn``) received."""

    side: Side
    method: str
    path: str
    query: str
    status: int
    """Status sent to the client (0 if none was sent)."""
    authorization: bool
    """Whether the request carried an Authorization header."""
    range: str | None
    body_bytes: int
    """Response body bytes sent."""
    complete: bool
    """Whether the whole response body was sent."""


@attrs.define
class _Entry:
    side: Side
    method: str
    path: str
    query: str
    authorization: bool
    range: str | None
    status: int = 0
    body_bytes: int = 0
    complete: bool = False

    def snapshot(self) -> RelayRequest:
        return RelayRequest(
            side=self.side,
            method=self.method,
            path=self.path,
            query=self.query,
            status=self.status,
            authorization=self.authorization,
            range=self.range,
            body_bytes=self.body_bytes,
            complete=self.complete,
        )


@attrs.frozen
class _Ticket:
    repository: str
    digest: str
    authorization: str | None


@attrs.define
class _Failure:
    status: int
    remaining: int | None
    retry_after: int | None


class CountingRelay(Startable):
    """Plain-HTTP relay to an upstream registry on 127.0.0.1, with a CDN side.

    ``url`` is what clients use as the registry. ``cdn_url`` is where
    redirected blobs are served (another loopback address by default, so a
    client following the redirect changes host).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        ca_file: Path | None = None,
        host: str = "127.0.0.1",
        cdn_host: str = "127.0.0.2",
        cdn_url_host: str | None = None,
        cdn_reject_authorization: bool = True,
        chunk_size: int = RELAY_CHUNK,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme not in ("http", "https") or parsed.hostname is None:
            raise ValueError(f"not an upstream URL: {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_scheme = parsed.scheme
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.upstream_netloc = parsed.netloc
        self._upstream_context = ssl.create_default_context(
            cafile=str(ca_file) if ca_file is not None else None
        )
        self.host = host
        self.cdn_host = cdn_host
        self.cdn_url_host = cdn_url_host or cdn_host
        self.cdn_reject_authorization = cdn_reject_authorization
        """Answer 400 to CDN requests carrying Authorization (S3 does)."""
        self.chunk_size = chunk_size
        self.upstream_timeout = upstream_timeout
        self.latency = 0.0
        """Seconds to wait before forwarding each request."""

        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._bytes: collections.Counter[str] = collections.Counter()
        self._corrupt: set[str] = set()
        self._drops: dict[str, list[int]] = {}
        self._redirect = False
        self._failure: _Failure | None = None
        self._tickets: dict[str, _Ticket] = {}

        self._registry_server = TrackingServer((host, 0), _RelayHandler, owner=self)
        self._registry_server.side = "registry"  # type: ignore[attr-defined]
        self._cdn_server = TrackingServer((cdn_host, 0), _RelayHandler, owner=self)
        self._cdn_server.side = "cdn"  # type: ignore[attr-defined]
        self._threads = (ServerThread(self._registry_server), ServerThread(self._cdn_server))

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start both listeners."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both listeners, cut every connection and join every thread."""
        for thread in self._threads:
            thread.stop()

    @property
    def port(self) -> int:
        """The relay's port."""
        return self._threads[0].port

    @property
    def netloc(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{format_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: use as the registry URL."""
        return f"http://{self.netloc}"

    @property
    def cdn_port(self) -> int:
        """The CDN listener's port."""
        return self._threads[1].port

    @property
    def cdn_url(self) -> str:
        """``http://127.0.0.2:PORT`` (host as given by cdn_url_host)."""
        return f"http://{format_host(self.cdn_url_host)}:{self.cdn_port}"

    @property
    def unexpected_errors(self) -> list[str]:
        """Tracebacks of handler failures that were not connection errors."""
        return self._registry_server.unexpected_errors + self._cdn_server.unexpected_errors

    # -- behaviour switches --------------------------------------------------

    def corrupt(self, digest: str, enabled: bool = True) -> None:
        """Flip one byte in the middle of every body served for blob digest."""
        with self._lock:
            if enabled:
                self._corrupt.add(digest)
            else:
                self._corrupt.discard(digest)

    def drop_after(self, digest: str, n_bytes: int, times: int = 1) -> None:
        """Cut the connection after n_bytes of blob digest's body, times times."""
        with self._lock:
            if times > 0:
                self._drops[digest] = [n_bytes, times]
            else:
                self._drops.pop(digest, None)

    def redirect_blobs(self, enabled: bool = True) -> None:
        """Answer authorised blob GETs with 307 to the CDN listener."""
        with self._lock:
            self._redirect = enabled

    def fail_with(
        self, status: int | None, *, times: int | None = None, retry_after: int | None = None
    ) -> None:
        """Answer every request (both sides) with status; None restores service.

        ``times`` limits how many requests fail; ``retry_after`` adds the
        Retry-After header (seconds).
        """
        with self._lock:
            self._failure = None if status is None else _Failure(status, times, retry_after)

    def reset(self) -> None:
        """Forget counters and recorded requests (switches stay)."""
        with self._lock:
            self._entries.clear()
            self._counts.clear()
            self._bytes.clear()

    # -- observations --------------------------------------------------------

    def requests(self, side: Side | None = None) -> list[RelayRequest]:
        """Every request received, oldest first (optionally only one side)."""
        with self._lock:
            return [e.snapshot() for e in self._entries if side is None or e.side == side]

    def counts(self) -> collections.Counter[tuple[str, str]]:
        """Requests by (method, path without query), both sides."""
        with self._lock:
            return collections.Counter(self._counts)

    def count(self, method: str, path: str) -> int:
        """How many method requests for path arrived."""
        with self._lock:
            return self._counts[(method, path)]

    def blob_requests(self, digest: str, method: str = "GET") -> int:
        """Registry-side requests for blob digest in any repository."""
        with self._lock:
            return sum(
                n
                for (m, path), n in self._counts.items()
                if m == method and path.startswith("/v2/") and path.endswith(f"/blobs/{digest}")
            )

    def cdn_requests(self) -> list[RelayRequest]:
        """Requests the CDN side received."""
        return self.requests("cdn")

    def bytes_sent(self) -> collections.Counter[str]:
        """Response body bytes sent, by path."""
        with self._lock:
            return collections.Counter(self._bytes)

    def blob_bytes_sent(self, digest: str) -> int:
        """Body bytes sent for blob digest, on both sides, in any repository."""
        with self._lock:
            return sum(n for path, n in self._bytes.items() if path.endswith(digest))

    # -- internals for the handler -------------------------------------------

    def _arrive(self, entry: _Entry) -> _Failure | None:
        with self._lock:
            self._entries.append(entry)
            self._counts[(entry.method, entry.path)] += 1
            failure = self._failure
            if failure is None:
                return None
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failure = None
                if failure.remaining < 0:
                    return None
            return failure

    def _sent(self, entry: _Entry, n: int) -> None:
        with self._lock:
            entry.body_bytes += n
            self._bytes[entry.path] += n

    def _blob_rules(self, digest: str) -> tuple[bool, int | None]:
        with self._lock:
            corrupt = digest in self._corrupt
            drop = self._drops.get(digest)
            limit: int | None = None
            if drop is not None:
                limit = drop[0]
                drop[1] -= 1
                if drop[1] <= 0:
                    del self._drops[digest]
            return corrupt, limit

    def _redirecting(self) -> bool:
        with self._lock:
            return self._redirect

    def _issue_ticket(self, ticket: _Ticket) -> str:
        sig = secrets.token_urlsafe(24)
        with self._lock:
            self._tickets[sig] = ticket
        return sig

    def _ticket(self, sig: str) -> _Ticket | None:
        with self._lock:
            return self._tickets.get(sig)

    def _connect_upstream(self) -> http.client.HTTPConnection:
        if self.upstream_scheme == "https":
            return http.client.HTTPSConnection(
                self.upstream_host,
                self.upstream_port,
                timeout=self.upstream_timeout,
                context=self._upstream_context,
            )
        return http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=self.upstream_timeout
        )


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class _RelayHandler(QuietHandler):
    server: TrackingServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def relay(self) -> CountingRelay:
        relay: CountingRelay = self.server.owner
        return relay

    def _dispatch(self) -> None:
        relay = self.relay
        side: Side = self.server.side  # type: ignore[attr-defined]
        target = self.path
        if "://" in target:
            parsed = urllib.parse.urlsplit(target)
            target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        path, _, query = target.partition("?")
        entry = _Entry(
            side=side,
            method=self.command,
            path=path,
            query=query,
            authorization="Authorization" in self.headers,
            range=self.headers.get("Range"),
        )
        failure = relay._arrive(entry)
        if failure is not None:
            self._discard_body()
            extra = {}
            if failure.retry_after is not None:
                extra["Retry-After"] = str(failure.retry_after)
            self._respond(entry, failure.status, _error_body("UNAVAILABLE", "injected"), **extra)
            return
        if relay.latency:
            time.sleep(relay.latency)
        if side == "cdn":
            self._serve_cdn(entry)
            return
        blob = BLOB_PATH.match(path)
        if blob is not None and self.command == "GET" and relay._redirecting():
            self._redirect(entry, blob["name"], blob["digest"])
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        digest = blob["digest"] if blob is not None and self.command == "GET" else None
        self._forward(entry, self.command, target, headers, self._request_body(), digest)

    # -- request bodies --------------------------------------------------------

    def _request_body(self) -> Iterator[bytes] | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length == 0:
            return None
        return self._read_exactly(length)

    def _read_exactly(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(self.relay.chunk_size, remaining))
            if not data:
                raise ConnectionError("client closed the request body early")
            remaining -= len(data)
            yield data

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield from self._read_exactly(size)
            self.rfile.readline(8)

    def _discard_body(self) -> None:
        body = self._request_body()
        if body is not None:
            for _ in body:
                pass

    # -- responses -------------------------------------------------------------

    def _respond(self, entry: _Entry, status: int, body: bytes, **headers: str) -> None:
        entry.status = status
        self.relay._sent(entry, len(body) if self.command != "HEAD" else 0)
        entry.complete = True
        self.send_body(status, body, "application/json", **headers)

    def _forward(
        self,
        entry: _Entry,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: Iterator[bytes] | None,
        digest: str | None,
    ) -> None:
        relay = self.relay
        connection = relay._connect_upstream()
        try:
            try:
                connection.connect()
            except OSError:
                self._respond(entry, 502, _error_body("UNAVAILABLE", "upstream unreachable"))
                return
            assert connection.sock is not None
            with self.server.tracked(connection.sock):
                connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                connection.putheader("Host", relay.upstream_netloc)
                chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
                for name, value in headers:
                    connection.putheader(name, value)
                if chunked:
                    connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                if body is not None:
                    for piece in body:
                        if chunked:
                            connection.send(b"%x\r\n%b\r\n" % (len(piece), piece))
                        else:
                            connection.send(piece)
                    if chunked:
                        connection.send(b"0\r\n\r\n")
                response = connection.getresponse()
                self._relay_response(entry, response, digest)
        finally:
            connection.close()

    def _relay_response(
        self, entry: _Entry, response: http.client.HTTPResponse, digest: str | None
    ) -> None:
        relay = self.relay
        entry.status = response.status
        self.send_response_only(response.status)
        length_header = response.getheader("Content-Length")
        for name, value in response.getheaders():
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "location" and value.startswith(relay.upstream_url):
                value = relay.url + value[len(relay.upstream_url) :]
            self.send_header(name, value)
        has_body = (
            self.command != "HEAD"
            and response.status not in (204, 304)
            and (response.status >= 200)
        )
        if not has_body:
            self.end_headers()
            entry.complete = True
            return
        chunked = length_header is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        length = None if chunked else int(length_header or 0)
        corrupt, limit = False, None
        if digest is not None and response.status in (200, 206):
            corrupt, limit = relay._blob_rules(digest)
        self._stream(entry, response, length, chunked, corrupt, limit)

    def _stream(
        self,
        entry: _Entry,
        response: http.client.HTTPResponse,
        length: int | None,
        chunked: bool,
        corrupt: bool,
        limit: int | None,
    ) -> None:
        relay = self.relay
        buffer = bytearray(relay.chunk_size)
        view = memoryview(buffer)
        corrupt_at: int | None = None
        if corrupt:
            corrupt_at = length // 2 if length else 0
        sent = 0
        complete = False
        try:
            while True:
                want = relay.chunk_size
                if limit is not None:
                    want = min(want, limit - sent)
                    if want <= 0:
                        break
                if length is not None:
                    want = min(want, length - sent)
                    if want <= 0:
                        complete = True
                        break
                try:
                    n = response.readinto(view[:want])
                except (OSError, http.client.HTTPException):
                    break
                if n == 0:
                    complete = length is None
                    break
                if corrupt_at is not None and sent <= corrupt_at < sent + n:
                    buffer[corrupt_at - sent] ^= 0xFF
                if length is not None and sent + n == length:
                    entry.complete = True
                relay._sent(entry, n)
                if chunked:
                    self.wfile.write(b"%x\r\n" % n)
                    self.wfile.write(view[:n])
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(view[:n])
                sent += n
            if complete and chunked:
                entry.complete = True
                self.wfile.write(b"0\r\n\r\n")
        finally:
            view.release()
        if not complete:
            # The client must see a short body, not wait for the rest.
            entry.complete = False
            self.close_connection = True
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.connection, socket.SHUT_RDWR)

    # -- redirects and the CDN side ----------------------------------------------

    def _redirect(self, entry: _Entry, repository: str, digest: str) -> None:
        relay = self.relay
        # Like a real registry, check authorisation before handing out a URL:
        # ask the upstream with the client's own headers.
        connection = relay._connect_upstream()
        try:
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "range"
            }
            connection.request(
                "HEAD", entry.path, headers={**headers, "Host": relay.upstream_netloc}
            )
            head = connection.getresponse()
            head.read()
        except (OSError, http.client.HTTPException):
            self._respond(entry, 502, _error_body("UNAVAILABLE", "upstream unreachable"))
            return
        finally:
            connection.close()
        if head.status != 200:
            entry.status = head.status
            entry.complete = True
            self.send_response_only(head.status)
            for name, value in head.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        sig = relay._issue_ticket(_Ticket(repository, digest, self.headers.get("Authorization")))
        location = f"{relay.cdn_url}/cdn/{digest}?sig={sig}"
        entry.status = 307
        entry.complete = True
        self.send_response_only(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve_cdn(self, entry: _Entry) -> None:
        relay = self.relay
        match = CDN_PATH.match(entry.path)
        sig = urllib.parse.parse_qs(entry.query).get("sig", [""])[0]
        ticket = relay._ticket(sig) if match is not None else None
        if self.command not in ("GET", "HEAD"):
            self._discard_body()
            self._respond(entry, 405, b"")
            return
        if match is None or ticket is None or ticket.digest != match["digest"]:
            self._respond(entry, 403, _error_body("DENIED", "bad signature"))
            return
        if entry.authorization and relay.cdn_reject_authorization:
            self._respond(
                entry, 400, _error_body("INVALID_ARGUMENT", "Only one auth mechanism allowed")
            )
            return
        headers: list[tuple[str, str]] = []
        if ticket.authorization is not None:
            headers.append(("Authorization", ticket.authorization))
        if entry.range is not None:
            headers.append(("Range", entry.range))
        digest = ticket.digest if self.command == "GET" else None
        target = f"/v2/{ticket.repository}/blobs/{ticket.digest}"
        self._forward(entry, self.command, target, headers, None, digest)
