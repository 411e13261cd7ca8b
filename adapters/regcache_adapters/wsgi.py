"""The registry API (``/v2/...``) as a WSGI application.

One engine per process: a background trio thread
(:class:`~regcache_adapters._bridge.EnginePortal`) shared by every worker
thread, started on the first request so that it is made after a pre-forking
server (gunicorn) forks, and again in a child forked after it started.
Cached blobs go out through ``wsgi.file_wrapper`` over the store file
positioned at the region's start (gunicorn and waitress send it with
``sendfile``, bounded by Content-Length); in-flight fetches are pulled from
the engine thread chunk by chunk by the response iterator, which raises if
the fetch fails so that the server drops the connection before the last byte.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

from regcache.config import Config
from regcache.proxy import FileBody, Request

from ._bridge import (
    AuthHook,
    ChunkStream,
    EnginePortal,
    answer,
    read_region,
    refusal,
    request_target,
    response_headers,
)

__all__ = ["RegistryWSGIApp", "create_app"]

StartResponse = Callable[..., Any]


class RegistryWSGIApp:
    """A WSGI app serving the registry API of one :class:`regcache.Mirror` per process."""

    def __init__(self, config: Config, *, auth: AuthHook | None = None) -> None:
        self.config = config
        self.auth = auth
        self._lock = threading.Lock()
        self._portal: EnginePortal | None = None
        self._pid = 0

    def portal(self) -> EnginePortal:
        """The process's engine thread, started on first use."""
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                portal = EnginePortal(self.config)
                portal.start()
                self._portal, self._pid = portal, os.getpid()
                atexit.register(portal.stop)
            return self._portal

    def close(self) -> None:
        """Stop the engine thread (a worker's exit hook); the next request starts it again."""
        with self._lock:
            portal, self._portal = self._portal, None
        if portal is not None and self._pid == os.getpid():
            portal.stop()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        client = environ.get("REMOTE_ADDR", "-")
        request = Request(
            method=environ["REQUEST_METHOD"],
            target=request_target(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")),
            headers=_headers(environ),
            client=f"{client}:{environ.get('REMOTE_PORT', '-')}",
        )
        reply = refusal(self.auth, request)
        if reply is None:
            portal = self.portal()
            reply = portal.call(answer, portal.mirror, request)
        status = f"{reply.status} {_phrase(reply.status)}"
        start_response(status, response_headers(reply))
        body = reply.body
        if request.method == "HEAD" or isinstance(body, bytes):
            if isinstance(body, FileBody) and body.file is not None:
                body.file.close()
            return [] if request.method == "HEAD" else [body]  # type: ignore[list-item]
        if isinstance(body, FileBody):
            return _file_body(environ, body)
        return _stream_body(self.portal().open_stream(body))


def _headers(environ: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").lower(), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("content-type", environ["CONTENT_TYPE"]))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("content-length", environ["CONTENT_LENGTH"]))
    return tuple(headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _file_body(environ: dict[str, Any], body: FileBody) -> Iterable[bytes]:
    file = body.file if body.file is not None else Path(body.path).open("rb")  # noqa: SIM115
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        # The server sends from the current position and stops at
        # Content-Length (PEP 3333), which is the region's length.
        file.seek(body.offset)
        wrapped: Iterable[bytes] = wrapper(file, 1024 * 1024)
        return wrapped
    return _region(file, body)


class _Body:
    """A response iterable whose ``close()`` (PEP 3333) releases what it holds.

    Not a generator: a server calls ``close()`` even when the client left
    before the first chunk, and a generator that never started would run no
    clean-up at all.
    """

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._release()


def _region(file: Any, body: FileBody) -> _Body:
    return _Body(read_region(file.fileno(), body.offset, body.length), file.close)


def _stream_body(stream: ChunkStream) -> _Body:
    def chunks() -> Iterator[bytes]:
        # Raising here (the producer's error) after the headers went out
        # makes the server close the connection: the client sees a short body.
        while (chunk := stream.receive().result()) is not None:
            yield chunk

    return _Body(chunks(), stream.close)


def create_app(config: Config, *, auth: AuthHook | None = None) -> RegistryWSGIApp:
    """A WSGI application serving the registry API over a mirror built from ``config``.

    ``auth`` sees every request before the mirror does; see
    :data:`regcache_adapters.AuthHook`.
    """
    return RegistryWSGIApp(config, auth=auth)
