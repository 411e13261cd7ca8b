"""What the ASGI and WSGI adapters share: request translation and the engine portal.

The engine is trio. A host that is not trio (asyncio servers, WSGI worker
threads) reaches it through :class:`EnginePortal`: one background thread runs
``trio.run`` with a :class:`regcache.Mirror` inside, and other threads submit
coroutine calls to it and get :class:`concurrent.futures.Future` results.
A streamed body (an in-flight upstream fetch) crosses the thread boundary
chunk by chunk through a bounded channel (:class:`ChunkStream`), so a slow
client slows the producer down instead of piling chunks up in memory.

Nothing here decides how to answer a request: :meth:`regcache.Mirror.handle`
does. The only policy an embedding program adds is the ``auth`` hook.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import trio

from regcache import Mirror
from regcache.config import Config
from regcache.core import ErrorCode, LocalProtocolError, RegcacheError, RemoteProtocolError
from regcache.proxy import Reply, Request, StreamBody

log = logging.getLogger("regcache.adapters")

T = TypeVar("T")

#: Decides whether a request may be served: True lets it through; False
#: refuses it with 401. Raising :class:`~regcache.core.RemoteProtocolError`
#: answers that error (its status and headers, e.g. a WWW-Authenticate
#: challenge); raising anything else refuses with 403.
AuthHook = Callable[[Request], bool]

#: How long the engine thread may take to open the store and the index.
STARTUP_TIMEOUT = 60.0

#: How long stopping waits for in-flight work to be cancelled and the thread to end.
STOP_TIMEOUT = 15.0

#: Chunks of a streamed body buffered between the engine thread and the host.
#: With 1 MiB chunks this bounds the memory a slow client can make one
#: response hold.
STREAM_BUFFER = 4

#: Read size for cached blobs sent without zero-copy support.
FILE_CHUNK = 1024 * 1024

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

# Characters left as they are when a decoded path is quoted back into a target.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


# -- translation -------------------------------------------------------------


def request_target(path: str, query: str) -> str:
    """The request target regcache routes on, from a decoded path and a query."""
    target = quote(path, safe=_PATH_SAFE) or "/"
    return f"{target}?{query}" if query else target


def strip_prefix(path: str, prefix: str) -> str:
    """``path`` without the mount ``prefix`` (hosts differ on whether it is still there)."""
    prefix = prefix.rstrip("/")
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        return path[len(prefix) :] or "/"
    return path


def error_reply(error: RemoteProtocolError) -> Reply:
    """An OCI error JSON reply."""
    return Reply(
        error.status,
        (API_VERSION, ("Content-Type", "application/json"), *error.headers),
        error.to_body(),
    )


def refusal(auth: AuthHook | None, request: Request) -> Reply | None:
    """Run the ``auth`` hook: None lets the request through, else the refusal."""
    if auth is None:
        return None
    try:
        allowed = auth(request)
    except RemoteProtocolError as exc:
        return error_reply(exc)
    except Exception:
        log.warning("%s %s: refused by the auth hook", request.method, request.target[:300])
        return error_reply(RemoteProtocolError(ErrorCode.DENIED, "refused by this server"))
    if allowed:
        return None
    return error_reply(
        RemoteProtocolError(
            ErrorCode.UNAUTHORIZED,
            "authentication required",
            headers=(("WWW-Authenticate", 'Basic realm="regcache"'),),
        )
    )


async def answer(mirror: Mirror, request: Request) -> Reply:
    """:meth:`Mirror.handle`, with every failure turned into an OCI error reply."""
    try:
        return await mirror.handle(request)
    except RemoteProtocolError as exc:
        return error_reply(exc)
    except RegcacheError as exc:
        log.error("%s %s: %s", request.method, request.target[:300], exc)  # noqa: TRY400
        return error_reply(RemoteProtocolError(ErrorCode.UNKNOWN, str(exc)))
    except Exception:  # a bug in one request must not take the host down
        log.exception("%s %s: internal error", request.method, request.target[:300])
        return error_reply(RemoteProtocolError(ErrorCode.UNKNOWN, "internal error"))


def not_running_reply() -> Reply:
    """The answer while the mirror is not running (before start-up, after shut-down)."""
    return error_reply(
        RemoteProtocolError(ErrorCode.UNAVAILABLE, "the mirror is not running", status=503)
    )


def response_headers(reply: Reply) -> list[tuple[str, str]]:
    """The reply's headers with the Content-Length the host must announce."""
    headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(reply.length)))
    return headers


def read_region(fd: int, offset: int, length: int) -> Iterator[bytes]:
    """Yield a file region in :data:`FILE_CHUNK` pieces; a short file is an error."""
    position, end = offset, offset + length
    while position < end:
        chunk = os.pread(fd, min(FILE_CHUNK, end - position), position)
        if not chunk:
            raise RemoteProtocolError(ErrorCode.UNKNOWN, "cached blob shorter than its size")
        yield chunk
        position += len(chunk)


# -- the portal ----------------------------------------------------------------


class _Call:
    """One coroutine call submitted to the engine thread."""

    def __init__(self) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.scope: trio.CancelScope | None = None
        self.abandoned = False

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        # The caller may have cancelled the future meanwhile, from its thread.
        try:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        except concurrent.futures.InvalidStateError:
            pass


class EnginePortal:
    """A :class:`regcache.Mirror` running in its own trio thread, callable from others."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._mirror: Mirror | None = None
        self._error: BaseException | None = None

    @property
    def mirror(self) -> Mirror:
        """The running mirror (use it only from the engine thread)."""
        if self._mirror is None:
            raise LocalProtocolError("the engine thread is not running")
        return self._mirror

    @property
    def running(self) -> bool:
        """Whether the engine thread is up and accepting calls."""
        return self._mirror is not None

    def start(self) -> None:
        """Start the engine thread and wait until the mirror runs (blocking)."""
        if self._thread is not None:
            raise LocalProtocolError("the engine thread was already started")
        self._thread = threading.Thread(target=self._run, name="regcache-engine", daemon=True)
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT):
            raise LocalProtocolError("the engine thread did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Cancel what is in flight, close the mirror and join the thread (blocking)."""
        token, stop, thread = self._token, self._stop, self._thread
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            log.exception("the engine thread failed")
        finally:
            self._mirror = None
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with Mirror(self.config) as mirror, trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._nursery, self._mirror = nursery, mirror
            self._ready.set()
            await self._stop.wait()
            self._mirror = None
            nursery.cancel_scope.cancel()

    def submit(
        self, function: Callable[..., Awaitable[T]], *args: Any
    ) -> concurrent.futures.Future[T]:
        """Run ``await function(*args)`` in the engine thread; thread-safe.

        Cancelling the returned future cancels the call.
        """
        token, nursery = self._token, self._nursery
        if token is None or nursery is None or self._mirror is None:
            raise LocalProtocolError("the engine thread is not running")
        call = _Call()

        async def run() -> None:
            with trio.CancelScope() as scope:
                call.scope = scope
                if call.abandoned:
                    scope.cancel()
                try:
                    result = await function(*args)
                except Exception as exc:
                    call.settle(error=exc)
                    return
                except BaseException:
                    call.settle(error=LocalProtocolError("the call was cancelled"))
                    raise
                call.settle(result)
            if scope.cancelled_caught:
                call.settle(error=LocalProtocolError("the call was cancelled"))

        def abandon(future: concurrent.futures.Future[Any]) -> None:
            if not future.cancelled():
                return
            call.abandoned = True

            def cancel() -> None:
                if call.scope is not None:
                    call.scope.cancel()

            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(cancel)

        call.future.add_done_callback(abandon)
        try:
            token.run_sync_soon(nursery.start_soon, run)
        except trio.RunFinishedError as exc:
            raise LocalProtocolError("the engine thread has stopped") from exc
        return call.future

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Blocking form of :meth:`submit`, for threads that may wait."""
        return self.submit(function, *args).result()

    def open_stream(self, body: StreamBody) -> ChunkStream:
        """Start ``body``'s producer in the engine thread; read it with the stream."""
        stream = ChunkStream(self, body)
        self.submit(stream.pump)
        return stream


class ChunkStream:
    """A streamed body crossing from the engine thread to a host thread."""

    def __init__(self, portal: EnginePortal, body: StreamBody) -> None:
        self._portal = portal
        self._body = body
        self._send, self._receive = trio.open_memory_channel[bytes](STREAM_BUFFER)
        self._error: BaseException | None = None
        self._scope = trio.CancelScope()

    async def pump(self) -> None:
        """Run the producer (engine thread); its failure ends the stream with an error."""
        with self._scope:
            async with self._send:
                try:
                    await self._body.produce(self._send.send)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the host went away
                except Exception as exc:
                    self._error = exc

    async def _next(self) -> bytes | None:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            return None

    def receive(self) -> concurrent.futures.Future[bytes | None]:
        """The next chunk, None at the end; the producer's error if it failed."""
        return self._portal.submit(self._next)

    def close(self) -> None:
        """Stop the producer (the client is gone or the body is done)."""

        async def close() -> None:
            self._scope.cancel()
            await self._receive.aclose()

        with contextlib.suppress(LocalProtocolError):
            self._portal.submit(close)
