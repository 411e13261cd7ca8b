"""Threaded HTTP/1.1 servers that stop cleanly, for the test fixtures.

The stdlib ``ThreadingHTTPServer`` with three additions: TLS is negotiated in
the connection's own thread (a client that never completes the handshake does
not stall the accept loop), every open socket is tracked so that ``stop()``
can cut them all and join every handler thread, and connection errors caused
by clients going away are counted instead of printed.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self, cast

# A TLS client that connects and then says nothing must not hold a handler
# thread forever.
HANDSHAKE_TIMEOUT = 10.0

# How long stop() waits for the serve loop and the handler threads.
STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on host a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def format_host(host: str) -> str:
    """Bracket an IPv6 literal for use in a URL authority."""
    return f"[{host}]" if ":" in host else host


class TrackingServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer that tracks its sockets and may speak TLS."""

    daemon_threads = False
    block_on_close = True
    # Twenty clients opening connections at once must not overflow the
    # listen backlog (the default of 5 turns that into one-second SYN retries).
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        *,
        ssl_context: ssl.SSLContext | None = None,
        owner: Any = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.ssl_context = ssl_context
        self.owner = owner
        self._sockets_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closing = False
        self.unexpected_errors: list[str] = []
        self.connection_errors = 0
        super().__init__(address, handler)

    def track(self, sock: socket.socket) -> None:
        """Remember sock so that stop() can cut it; closed at once if stopping."""
        with self._sockets_lock:
            if not self._closing:
                self._sockets.add(sock)
                return
        _cut(sock)

    def untrack(self, sock: socket.socket) -> None:
        """Forget sock (its owner closes it)."""
        with self._sockets_lock:
            self._sockets.discard(sock)

    @contextlib.contextmanager
    def tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        """Track sock for the duration of the block."""
        self.track(sock)
        try:
            yield sock
        finally:
            self.untrack(sock)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                self.connection_errors += 1
                return
        try:
            with self.tracked(sock):
                if isinstance(sock, ssl.SSLSocket):
                    sock.settimeout(HANDSHAKE_TIMEOUT)
                    try:
                        sock.do_handshake()
                    except OSError:
                        self.connection_errors += 1
                        return
                    sock.settimeout(None)
                # typeshed types the server argument as Self.
                cast(Any, self.RequestHandlerClass)(sock, client_address, self)
        finally:
            if sock is not request:
                sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            # Clients hanging up, resets and TLS alerts are normal in tests
            # that cut connections on purpose.
            self.connection_errors += 1
            return
        text = traceback.format_exc()
        self.unexpected_errors.append(text)
        print(text, file=sys.stderr)

    def cut_all(self) -> None:
        """Shut down every tracked socket so that blocked handlers return."""
        with self._sockets_lock:
            self._closing = True
            sockets = list(self._sockets)
        for sock in sockets:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the TLS
    # state under the feet of the thread still reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class ServerThread:
    """Runs a TrackingServer's accept loop in a background thread."""

    def __init__(self, server: TrackingServer) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"serve-{server.RequestHandlerClass.__name__}",
            daemon=True,
        )
        self._started = False
        self._stopped = False

    @property
    def port(self) -> int:
        """The port the server listens on."""
        port: int = self.server.server_address[1]
        return port

    def start(self) -> None:
        """Start serving."""
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, cut every connection and join every thread."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self.server.shutdown()
            self._thread.join(STOP_TIMEOUT)
        self.server.cut_all()
        # server_close() joins the handler threads (block_on_close).
        self.server.server_close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 request handler that does not log to stderr."""

    protocol_version = "HTTP/1.1"
    server_version = "regcache-test"
    sys_version = ""
    # Idle keep-alive connections close after this long.
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        return

    def send_body(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        """Send a complete response with a fixed body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Startable:
    """Context-manager protocol for fixtures with start() and stop()."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
