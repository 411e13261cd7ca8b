"""The registry-mirror front end: ``/v2/`` requests in, engine answers out.

Request translation only: the core parses the route, the engine decides how
to answer, :mod:`._server` moves the bytes. Clients name the upstream with
containerd's ``?ns=``, a leading alias or host component, or not at all (the
default registry); see :func:`regcache.core.parse_route`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit

from regcache.core import ErrorCode, RemoteProtocolError
from regcache.core._challenge import Credentials
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

from ._logins import LOGIN_PATH, TunnelLogins
from ._server import FileBody, Reply, Request, StreamBody
from ._users import ClientUsers

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def _namespace_headers(route: Route) -> tuple[tuple[str, str], ...]:
    # The distribution spec's proxying section: echo the namespace that
    # containerd's ns= parameter chose, so the client knows it was honoured.
    if not isinstance(route, Ping) and route.namespace_from_ns:
        return (("OCI-Namespace", route.registry),)
    return ()


class MirrorApp:
    """The registry API handler over one engine, for the mirror and inside CONNECT.

    As the mirror, ``users`` (if any) must authenticate with Basic auth. Inside
    an intercepted CONNECT tunnel (``client_credentials=True``) a client logs
    in at regcache's own token realm (:mod:`._logins`) with its credentials for
    the upstream registry; they are used for registries configured without
    credentials of their own.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        users: Mapping[str, str] | None = None,
        client_credentials: bool = False,
    ) -> None:
        self.engine = engine
        self.users = ClientUsers(users or {})
        self.client_credentials = client_credentials
        self.logins = TunnelLogins()

    async def handle(self, request: Request) -> Reply:
        """Answer one request."""
        try:
            return await self._handle(request)
        except RemoteProtocolError as exc:
            return Reply(
                exc.status,
                (API_VERSION, ("Content-Type", "application/json"), *exc.headers),
                exc.to_body(),
            )

    async def _handle(self, request: Request) -> Reply:
        credentials = None
        if self.client_credentials:
            if request.target.split("?", 1)[0] == LOGIN_PATH and request.method == "GET":
                body = self.logins.issue(request.header("authorization"))
                return Reply(200, (("Content-Type", "application/json"),), body)
            credentials, recognised = self.logins.identify(request.header("authorization"))
            if not recognised:
                raise self._login_challenge(
                    request, "the token is unknown or expired; log in again"
                )
        elif not await self.users.check(request.header("authorization")):
            raise RemoteProtocolError(
                ErrorCode.UNAUTHORIZED,
                "this mirror requires a user name and password",
                headers=(("WWW-Authenticate", 'Basic realm="regcache"'),),
            )
        route = parse_route(
            request.method, request.target, self.engine.registry_map, host=request.host
        )
        if isinstance(route, Ping) and self._wants_client_login(request, credentials):
            raise self._login_challenge(request, "log in (or fetch an anonymous token) first")
        try:
            return await self._answer(route, request, credentials)
        except RemoteProtocolError as exc:
            if self._wants_client_login(request, credentials) and exc.code in (
                ErrorCode.DENIED,
                ErrorCode.UNAUTHORIZED,
            ):
                raise self._login_challenge(
                    request, f"the upstream refused anonymous access: {exc.message}"
                ) from exc
            raise

    def _tunnel_registry(self, request: Request) -> str | None:
        if not self.client_credentials or request.host is None:
            return None
        registry_map = self.engine.registry_map
        return registry_map.lookup(request.host) or registry_map.lookup(
            request.host.removesuffix(":443")
        )

    def _wants_client_login(self, request: Request, credentials: Credentials | None) -> bool:
        """Inside a tunnel to a registry configured without credentials, with none."""
        if credentials is not None or request.header("authorization"):
            return False
        registry = self._tunnel_registry(request)
        if registry is None:
            return False
        client = self.engine.registries.get(registry)
        return client is None or client.credentials is None

    def _login_challenge(self, request: Request, message: str) -> RemoteProtocolError:
        registry = self._tunnel_registry(request) or "regcache"
        challenge = self.logins.challenge(request.host or "", registry)
        return RemoteProtocolError(
            ErrorCode.UNAUTHORIZED, message, headers=(("WWW-Authenticate", challenge),)
        )

    async def _answer(
        self, route: Route, request: Request, credentials: Credentials | None
    ) -> Reply:
        ns = _namespace_headers(route)
        if isinstance(route, Ping):
            return Reply(200, (API_VERSION, ("Content-Type", "application/json")), b"{}")
        if isinstance(route, ManifestRoute):
            answer = await self.engine.manifest(route, request.header_values("accept"), credentials)
            return self._manifest_reply(answer, route, ns)
        if isinstance(route, BlobRoute):
            blob = await self.engine.blob(route, request.header("range"), credentials)
            return self._blob_reply(blob, route, ns)
        if isinstance(route, TagsList):
            query = urlsplit(request.target).query
            relayed = await self.engine.tags(route, _without_ns(query), credentials)
            return Reply(
                relayed.status,
                (API_VERSION, *relayed.headers, *ns),
                relayed.body,
                registry=route.registry,
            )
        if isinstance(route, Referrers):
            relayed = await self.engine.referrers(route, credentials)
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
