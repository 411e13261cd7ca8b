"""The registry-mirror front end: ``/v2/`` requests in, engine answers out.

Request translation only: the core parses the route, the engine decides how
to answer, :mod:`._server` moves the bytes. Clients name the upstream with
containerd's ``?ns=``, a leading alias or host component, or not at all (the
default registry); see :func:`regcache.core.parse_route`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

import trio

from regcache.core import ErrorCode, RemoteProtocolError
from regcache.core._challenge import parse_basic_authorization, verify_password
from regcache.core._routes import (
    BlobRoute,
    Catalog,
    ManifestRoute,
    Ping,
    Referrers,
    Route,
    TagsList,
    WriteOperation,
    parse_route,
)
from regcache.engine import BlobAnswer, Engine, ManifestAnswer

from ._server import FileBody, Reply, Request, StreamBody

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def _namespace_headers(route: Route) -> tuple[tuple[str, str], ...]:
    # The distribution spec's proxying section: echo the namespace that
    # containerd's ns= parameter chose, so the client knows it was honoured.
    if not isinstance(route, Ping) and route.namespace_from_ns:
        return (("OCI-Namespace", route.registry),)
    return ()


class MirrorApp:
    """The mirror's request handler, over one engine."""

    def __init__(self, engine: Engine, *, users: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.users = dict(users or {})
        # A password hash costs ~0.3 s to check by design; remember the
        # (user, password digest) pairs that passed so requests do not pay it.
        self._verified: set[tuple[str, bytes]] = set()

    async def _check_client(self, request: Request) -> None:
        if not self.users:
            return
        credentials = parse_basic_authorization(request.header("authorization") or "")
        if credentials is not None:
            encoded = self.users.get(credentials.username)
            seen = (credentials.username, hashlib.sha256(credentials.password.encode()).digest())
            if encoded is not None and seen in self._verified:
                return
            if encoded is not None and await trio.to_thread.run_sync(
                verify_password, credentials.password, encoded
            ):
                self._verified.add(seen)
                return
        raise RemoteProtocolError(
            ErrorCode.UNAUTHORIZED,
            "this mirror requires a user name and password",
            headers=(("WWW-Authenticate", 'Basic realm="regcache"'),),
        )

    async def handle(self, request: Request) -> Reply:
        """Answer one request."""
        try:
            await self._check_client(request)
            route = parse_route(
                request.method, request.target, self.engine.registry_map, host=request.host
            )
            return await self._answer(route, request)
        except RemoteProtocolError as exc:
            return Reply(
                exc.status,
                (API_VERSION, ("Content-Type", "application/json"), *exc.headers),
                exc.to_body(),
            )

    async def _answer(self, route: Route, request: Request) -> Reply:
        ns = _namespace_headers(route)
        if isinstance(route, Ping):
            return Reply(200, (API_VERSION, ("Content-Type", "application/json")), b"{}")
        if isinstance(route, ManifestRoute):
            answer = await self.engine.manifest(route, request.header_values("accept"))
            return self._manifest_reply(answer, route, ns)
        if isinstance(route, BlobRoute):
            blob = await self.engine.blob(route, request.header("range"))
            return self._blob_reply(blob, route, ns)
        if isinstance(route, TagsList):
            query = urlsplit(request.target).query
            relayed = await self.engine.tags(route, _without_ns(query))
            return Reply(
                relayed.status,
                (API_VERSION, *relayed.headers, *ns),
                relayed.body,
                registry=route.registry,
            )
        if isinstance(route, Referrers):
            relayed = await self.engine.referrers(route)
            return Reply(
                relayed.status,
                (API_VERSION, *relayed.headers, *ns),
                relayed.body,
                registry=route.registry,
            )
        if isinstance(route, Catalog):
            names = self.engine.catalog()
            if route.last is not None:
                names = [name for name in names if name > route.last]
            if route.n is not None:
                names = names[: route.n]
            body = json.dumps({"repositories": names}).encode()
            return Reply(200, (API_VERSION, ("Content-Type", "application/json")), body)
        if isinstance(route, WriteOperation):
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED,
                "regcache is a read-only pull-through cache; push and delete are not supported",
            )
        raise RemoteProtocolError(ErrorCode.UNSUPPORTED, "unsupported request")

    @staticmethod
    def _manifest_reply(
        answer: ManifestAnswer, route: ManifestRoute, ns: tuple[tuple[str, str], ...]
    ) -> Reply:
        headers = (
            API_VERSION,
            ("Content-Type", answer.media_type),
            ("Docker-Content-Digest", str(answer.digest)),
            ("ETag", f'"{answer.digest}"'),
            *ns,
        )
        if route.head:
            return Reply(
                200, headers, b"", route.registry, answer.cache, content_length=answer.size
            )
        return Reply(200, headers, answer.content, route.registry, answer.cache)

    @staticmethod
    def _blob_reply(blob: BlobAnswer, route: BlobRoute, ns: tuple[tuple[str, str], ...]) -> Reply:
        headers: tuple[tuple[str, str], ...] = (
            API_VERSION,
            ("Content-Type", "application/octet-stream"),
            ("Docker-Content-Digest", str(blob.digest)),
            ("ETag", f'"{blob.digest}"'),
            ("Accept-Ranges", "bytes"),
            *ns,
        )
        status, offset, length = 200, 0, blob.size
        if blob.byte_range is not None:
            status, offset, length = 206, blob.byte_range.first, blob.byte_range.length
            headers = (*headers, ("Content-Range", blob.byte_range.content_range()))
        if route.head:
            return Reply(status, headers, b"", route.registry, blob.cache, content_length=length)
        if blob.path is not None:
            return Reply(
                status, headers, FileBody(blob.path, offset, length), route.registry, blob.cache
            )
        return Reply(status, headers, StreamBody(length, blob.produce), route.registry, blob.cache)


def _without_ns(query: str) -> str:
    return "&".join(part for part in query.split("&") if part and not part.startswith("ns="))
