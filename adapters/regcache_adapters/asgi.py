"""The registry API (``/v2/...``) as an ASGI application.

Under a trio host (hypercorn's trio worker, or anyio on trio) the mirror runs
in the host's own loop and requests call it directly. Under asyncio (uvicorn,
hypercorn's asyncio worker) the mirror runs in a background trio thread
(:class:`~regcache_adapters._bridge.EnginePortal`) and requests await its
answers as futures. Cached blobs never cross that thread: they are sent from
the store file by the host, with ``http.response.zerocopysend`` when the
server offers it and in 1 MiB reads otherwise.

The mirror starts and stops with the ASGI lifespan protocol. A host that does
not run the lifespan of mounted apps (Starlette's ``Mount``, FastAPI's
``app.mount``) enters :meth:`RegistryApp.running` from its own lifespan.
Mounted under a prefix, the app strips ``scope["root_path"]`` from the path,
so clients address it as ``<prefix>/v2/...`` (containerd's ``override_path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import sniffio

from regcache import Mirror
from regcache.config import Config
from regcache.core import RegcacheError
from regcache.proxy import FileBody, Reply, Request, StreamBody

from ._bridge import (
    AuthHook,
    EnginePortal,
    answer,
    not_running_reply,
    read_region,
    refusal,
    request_target,
    response_headers,
    strip_prefix,
)

__all__ = ["RegistryApp", "create_app"]

log = logging.getLogger("regcache.adapters")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RegistryApp:
    """An ASGI app serving the registry API of one :class:`regcache.Mirror`."""

    def __init__(self, config: Config, *, auth: AuthHook | None = None) -> None:
        self.config = config
        self.auth = auth
        #: The mirror, when it runs in the host's own (trio) loop.
        self._direct: Mirror | None = None
        #: The engine thread, when the host is asyncio.
        self._portal: EnginePortal | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RegistryApp]:
        """Run the mirror for the duration of the block (in the host's loop or a thread)."""
        if sniffio.current_async_library() == "trio":
            async with Mirror(self.config) as mirror:
                self._direct = mirror
                try:
                    yield self
                finally:
                    self._direct = None
            return
        portal = EnginePortal(self.config)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, portal.start)
        self._portal = portal
        try:
            yield self
        finally:
            self._portal = None
            await loop.run_in_executor(None, portal.stop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, send)
        else:  # websocket: not a registry protocol
            raise RegcacheError(f"unsupported ASGI scope type {scope['type']!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        started = False
        try:
            async with self.running():
                started = True
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
        except Exception as exc:
            log.exception("the mirror failed to start or stop")
            kind = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": kind, "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, send: Send) -> None:
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request_target(scope["path"], "")
        prefix = request_target(scope.get("root_path", ""), "")
        target = strip_prefix(path, prefix if prefix != "/" else "")
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            target = f"{target}?{query}"
        client = scope.get("client")
        request = Request(
            method=scope["method"],
            target=target,
            headers=tuple(
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
            ),
            client=f"{client[0]}:{client[1]}" if client else "-",
        )
        reply = refusal(self.auth, request) or await self._answer(request)
        await self._send_reply(scope, send, reply, head=request.method == "HEAD")

    async def _answer(self, request: Request) -> Reply:
        if self._direct is not None:
            return await answer(self._direct, request)
        portal = self._portal
        if portal is None or not portal.running:
            return not_running_reply()
        return await asyncio.wrap_future(portal.submit(answer, portal.mirror, request))

    async def _send_reply(self, scope: Scope, send: Send, reply: Reply, *, head: bool) -> None:
        body = reply.body
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in response_headers(reply)
                    ],
                }
            )
            if head or isinstance(body, bytes):
                await send({"type": "http.response.body", "body": b"" if head else body})
            elif isinstance(body, FileBody):
                await self._send_file(scope, send, body)
            else:
                await self._send_stream(send, body)
        finally:
            if isinstance(body, FileBody) and body.file is not None:
                body.file.close()

    async def _send_file(self, scope: Scope, send: Send, body: FileBody) -> None:
        file = body.file if body.file is not None else Path(body.path).open("rb")  # noqa: SIM115
        try:
            if "http.response.zerocopysend" in scope.get("extensions", {}):
                await send(
                    {
                        "type": "http.response.zerocopysend",
                        "file": file,
                        "offset": body.offset,
                        "count": body.length,
                    }
                )
                return
            for chunk in read_region(file.fileno(), body.offset, body.length):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            file.close()

    async def _send_stream(self, send: Send, body: StreamBody) -> None:
        async def forward(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        if self._direct is not None:
            # A failing producer raises here: the response stays incomplete
            # and the host aborts the connection.
            await body.produce(forward)
        else:
            portal = self._portal
            if portal is None:
                raise RegcacheError("the mirror stopped while a body was being sent")
            stream = portal.open_stream(body)
            try:
                while (chunk := await asyncio.wrap_future(stream.receive())) is not None:
                    await forward(chunk)
            finally:
                stream.close()
        await send({"type": "http.response.body", "body": b""})


def create_app(config: Config, *, auth: AuthHook | None = None) -> RegistryApp:
    """An ASGI application serving the registry API over a mirror built from ``config``.

    ``auth`` sees every request (its target relative to the mount point) before
    the mirror does; see :data:`regcache_adapters.AuthHook`.
    """
    return RegistryApp(config, auth=auth)
