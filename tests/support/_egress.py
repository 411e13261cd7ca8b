"""An egress HTTP proxy that only tunnels (CONNECT, RFC 9110 section 9.3.6).

It resolves host names from a fixed map itself, so a client that cannot
resolve ``upstream.regcache.test`` reaches it only through the proxy. Every
CONNECT target is recorded; targets outside the map are refused with 403;
Proxy-Authorization (Basic) is checked when users are configured (407
otherwise, RFC 9110 section 15.5.8).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import threading
from collections.abc import Mapping

import attrs

from ._server import QuietHandler, ServerThread, Startable, TrackingServer, format_host

# Bound on connecting to a tunnel target.
CONNECT_TIMEOUT = 10.0

# Bytes copied per read in each direction of a tunnel.
TUNNEL_CHUNK = 64 * 1024


@attrs.frozen
class ConnectRecord:
    """One CONNECT request: its target and what the proxy did with it."""

    target: str
    """``host:port`` as the client wrote it."""
    status: int
    proxy_user: str | None
    """User name from Proxy-Authorization, if any was sent."""


class EgressProxy(Startable):
    """A CONNECT-only proxy on 127.0.0.1 with its own name resolution.

    ``hosts`` maps host names (or literal addresses) the proxy will tunnel to
    the address it connects to, e.g. ``{"upstream.regcache.test": "127.0.0.1"}``.
    """

    def __init__(
        self,
        hosts: Mapping[str, str],
        *,
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.hosts = {name.lower(): address for name, address in hosts.items()}
        self.users = dict(users or {})
        self.host = host
        self._lock = threading.Lock()
        self._records: list[ConnectRecord] = []
        self._server = TrackingServer((host, 0), _EgressHandler, owner=self)
        self._thread = ServerThread(self._server)

    def start(self) -> None:
        """Start accepting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, cut every tunnel and join every thread."""
        self._thread.stop()

    @property
    def port(self) -> int:
        """The proxy's port."""
        return self._thread.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (with no credentials in it)."""
        return f"http://{format_host(self.host)}:{self.port}"

    def url_with_credentials(self, user: str) -> str:
        """``http://user:password@127.0.0.1:PORT`` for a configured user."""
        return f"http://{user}:{self.users[user]}@{format_host(self.host)}:{self.port}"

    def records(self) -> list[ConnectRecord]:
        """Every CONNECT received, oldest first."""
        with self._lock:
            return list(self._records)

    def targets(self) -> list[str]:
        """Targets of the CONNECT requests that were tunnelled."""
        return [r.target for r in self.records() if r.status == 200]

    def reset(self) -> None:
        """Forget the records."""
        with self._lock:
            self._records.clear()

    def _record(self, record: ConnectRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _check(self, header: str | None) -> tuple[bool, str | None]:
        if header is None:
            return not self.users, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        user, _, password = decoded.partition(":")
        if not self.users:
            return True, user
        return self.users.get(user) == password, user


def _split_target(target: str) -> tuple[str, int] | None:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.lower(), int(port)


class _EgressHandler(QuietHandler):
    server: TrackingServer
    # Unbuffered reads: bytes after the CONNECT head belong to the tunnel and
    # must not sit in a read buffer.
    rbufsize = 0

    def _refuse(self, status: int, **headers: str) -> None:
        self.close_connection = True
        self.send_body(status, b"", "text/plain", Connection="close", **headers)

    def do_CONNECT(self) -> None:
        proxy: EgressProxy = self.server.owner
        target = self.path
        authorized, user = proxy._check(self.headers.get("Proxy-Authorization"))
        if not authorized:
            proxy._record(ConnectRecord(target, 407, user))
            self._refuse(407, Proxy_Authenticate='Basic realm="regcache-test-egress"')
            return
        parsed = _split_target(target)
        address = proxy.hosts.get(parsed[0]) if parsed is not None else None
        if parsed is None or address is None:
            proxy._record(ConnectRecord(target, 403, user))
            self._refuse(403)
            return
        try:
            upstream = socket.create_connection((address, parsed[1]), timeout=CONNECT_TIMEOUT)
        except OSError:
            proxy._record(ConnectRecord(target, 502, user))
            self._refuse(502)
            return
        with upstream, self.server.tracked(upstream):
            upstream.settimeout(None)
            proxy._record(ConnectRecord(target, 200, user))
            self.send_response_only(200, "Connection established")
            self.end_headers()
            self.close_connection = True
            self._tunnel(self.connection, upstream)

    def _tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        other = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        other.start()
        _pump(client, upstream)
        other.join()

    def _not_allowed(self) -> None:
        self._refuse(405, Allow="CONNECT")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(TUNNEL_CHUNK)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        # One side gone: end both directions.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(source, socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
