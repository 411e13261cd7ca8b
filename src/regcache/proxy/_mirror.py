"""The registry-mirror front end: ``/v2/`` requests in, engine answers out.

Request translation only: the core parses the route, the engine decides how
to answer, :mod:`._server` moves the bytes. Clients name the upstream with
containerd's ``?ns=``, a leading alias or host component, or not at all (the
default registry); see :func:`regcache.core.parse_route`.

The mirror also answers three operations endpoints, outside ``/v2/``:

- ``GET /healthz``: 200 ``ok`` while the process runs (liveness).
- ``GET /readyz``: 200 when the configuration is loaded and the store can be
  written (a small file is created and removed in the store's ``tmp/``
  directory), else 503 with the reason (readiness).
- ``GET /metrics``: the Prometheus metrics (:mod:`regcache._metrics`), text
  format 0.0.4.

``/healthz`` and ``/readyz`` are open to everyone, as load balancers and
orchestrators probe them without credentials, and they reveal nothing but
"ok" or which check failed. ``/metrics`` follows the mirror's ``users``
setting: when users are configured, a scrape needs Basic auth like any
registry request. Inside an intercepted CONNECT tunnel these paths are not
special: they belong to the upstream host the client asked for.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import trio

from regcache import _metrics
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

log = logging.getLogger("regcache.proxy")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"
_OPERATIONS_PATHS = frozenset({HEALTHZ_PATH, READYZ_PATH, METRICS_PATH})

#: How long ``/readyz`` waits for its write to the store: a hung disk must
#: fail the check (and leave the probe's thread behind), not hang the probe.
READY_PROBE_TIMEOUT = 5.0

_TEXT = ("Content-Type", "text/plain; charset=utf-8")

_ROUTE_KINDS: dict[type, str] = {
    Ping: "ping",
    ManifestRoute: "manifest",
    BlobRoute: "blob",
    TagsList: "tags",
    Referrers: "referrers",
    Catalog: "catalog",
    WriteOperation: "write",
}


def route_kind(route: Route) -> str:
    """The ``route`` label of the metrics for a parsed request."""
    return _ROUTE_KINDS.get(type(route), "other")


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
            if not self.client_credentials and not request.target.startswith("/v2/"):
                path = request.target.split("?", 1)[0]
                if path in _OPERATIONS_PATHS:
                    return await self._operations(path, request)
            return await self._handle(request)
        except RemoteProtocolError as exc:
            return Reply(
                exc.status,
                (API_VERSION, ("Content-Type", "application/json"), *exc.headers),
                exc.to_body(),
                route=self._kind_of(request),
            )

    def _kind_of(self, request: Request) -> str:
        # Only for refused requests (a cold path): parse again to label them.
        try:
            route = parse_route(
                request.method, request.target, self.engine.registry_map, host=request.host
            )
        except RemoteProtocolError:
            return "other"
        return route_kind(route)

    async def _operations(self, path: str, request: Request) -> Reply:
        """Answer ``/healthz``, ``/readyz`` and ``/metrics``."""
        if request.method not in ("GET", "HEAD"):
            return Reply(405, (_TEXT, ("Allow", "GET, HEAD")), b"method not allowed\n")
        headers: tuple[tuple[str, str], ...] = (_TEXT, ("Cache-Control", "no-store"))
        if path == HEALTHZ_PATH:
            status, body = 200, b"ok"
        elif path == READYZ_PATH:
            reason = await self._not_ready_reason()
            status, body = (200, b"ok") if reason is None else (503, f"{reason}\n".encode())
        else:
            if not await self.users.check(request.header("authorization")):
                raise RemoteProtocolError(
                    ErrorCode.UNAUTHORIZED,
                    "this mirror requires a user name and password",
                    headers=(("WWW-Authenticate", 'Basic realm="regcache"'),),
                )
            self._copy_store_metrics()
            headers = (("Content-Type", _metrics.CONTENT_TYPE), ("Cache-Control", "no-store"))
            status, body = 200, _metrics.REGISTRY.render().encode()
        if request.method == "HEAD":
            return Reply(status, headers, b"", content_length=len(body))
        return Reply(status, headers, body)

    def _copy_store_metrics(self) -> None:
        # The engine accounts the store's size in its index: no directory walk.
        _metrics.update_store(self.engine.stored_bytes, self.engine.evictions)

    async def _not_ready_reason(self) -> str | None:
        """Why the mirror cannot serve (None when it can); the details go to the log."""
        config = getattr(self.engine, "config", None)
        if config is None:
            return "not ready: the configuration is not loaded"
        root = getattr(self.engine.store, "root", None)
        directory = (Path(root) if root is not None else Path(config.data_dir) / "store") / "tmp"
        failure: str | None = f"no answer within {READY_PROBE_TIMEOUT:g}s"
        with trio.move_on_after(READY_PROBE_TIMEOUT):
            failure = await trio.to_thread.run_sync(
                _probe_writable, directory, abandon_on_cancel=True
            )
        if failure is None:
            return None
        log.warning("not ready: cannot write to the store directory %s: %s", directory, failure)
        return f"not ready: the store is not writable: {failure}"

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
            reply = await self._answer(route, request, credentials)
            return attrs.evolve(reply, route=route_kind(route))
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
        spans = blob.produce_spans if blob.fetch is not None else None
        body = StreamBody(length, blob.produce, spans)
        return Reply(status, headers, body, route.registry, blob.cache)


def _probe_writable(directory: Path) -> str | None:
    """Create, write and remove a small file in ``directory``; the failure, or None."""
    probe = directory / f"readyz-{os.getpid()}-{secrets.token_hex(8)}.probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink(missing_ok=True)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _without_ns(query: str) -> str:
    return "&".join(part for part in query.split("&") if part and not part.startswith("ns="))
