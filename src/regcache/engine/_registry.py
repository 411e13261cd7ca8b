"""One upstream registry as the engine talks to it.

A :class:`RegistryClient` owns everything about reaching one configured
registry: its base URLs (the ``mirrors`` tried first, then ``url``), its HTTP
client (own TLS trust and egress proxy), its credentials, the challenge it
remembered, and the token dance. The protocol decisions (which Authorization
to send, when to fetch a token, whether an answer is final) are the core's
:class:`~regcache.core.TokenNegotiation`; this module carries out its
commands. Redirects (registries send blobs to CDNs) are followed here,
without the registry's Authorization on any other host.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from regcache import _metrics
from regcache.core import AuthError, ErrorCode, RemoteProtocolError
from regcache.core._auth import (
    MAX_TOKEN_RESPONSE_SIZE,
    Done,
    Fail,
    FetchToken,
    Scope,
    SendRequest,
    TokenCache,
    TokenKey,
    TokenNegotiation,
)
from regcache.core._challenge import Credentials, RegistryAuthState
from regcache.core._policy import is_upstream_outage

from ._http import (
    HttpClient,
    Origin,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeoutError,
    resolve_location,
)

log = logging.getLogger("regcache.upstream")

#: Redirects followed for one request. Registries use one (to a CDN); a few
#: more allow for a CDN's own hop, and the bound stops redirect loops.
MAX_REDIRECTS = 5

#: Request/response rounds of the token dance per upstream request; the core
#: bounds it too, this also covers a ping to learn a missing challenge.
MAX_AUTH_STEPS = 8

#: Pause before the one retry of an idempotent request whose connection
#: failed: long enough for a restarting upstream to accept again.
RETRY_DELAY = 0.25

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class TokenAnswer:
    """A token endpoint's answer, shared by every request that waited for it."""

    status: int
    body: bytes


@attrs.define(eq=False)
class _TokenFlight:
    done: trio.Event = attrs.field(factory=trio.Event)
    answer: TokenAnswer | None = None


class TokenFlights:
    """One token request at a time per (token URL, credentials): the others wait.

    Many concurrent misses on one repository all get a 401 at once; without
    this, each would ask the token endpoint.
    """

    def __init__(self) -> None:
        self._flights: dict[TokenKey, _TokenFlight] = {}

    async def fetch(self, key: TokenKey, run: Callable[[], Awaitable[TokenAnswer]]) -> TokenAnswer:
        """Run ``run`` once for ``key``; concurrent callers share its answer."""
        while (flight := self._flights.get(key)) is not None:
            await flight.done.wait()
            if flight.answer is not None:
                return flight.answer
            # The request we waited for failed (connection error): the first
            # waiter to wake tries again, the others wait for that one.
        flight = _TokenFlight()
        self._flights[key] = flight
        try:
            flight.answer = await run()
            return flight.answer
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()


def principal_of(credentials: Credentials | None, key: bytes) -> str:
    """A stable, non-reversible name for a set of upstream credentials.

    Access confirmations are stored under it (on disk), so it must not reveal
    the password: an HMAC under a key kept in the data directory.
    """
    if credentials is None:
        return "anonymous"
    mac = hmac.new(key, f"{credentials.username}\0{credentials.password}".encode(), hashlib.sha256)
    return f"{credentials.username}#{mac.hexdigest()[:24]}"


class RegistryClient:
    """Talks to one configured upstream registry."""

    def __init__(
        self,
        name: str,
        base_urls: Sequence[str],
        *,
        http: HttpClient,
        credentials: Credentials | None,
        principal: str,
        tokens: TokenCache,
        token_flights: TokenFlights,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not base_urls:
            raise ValueError("a registry needs at least one URL")
        self.name = name
        self.base_urls = tuple(url.rstrip("/") for url in base_urls)
        self.http = http
        self.credentials = credentials
        self.principal = principal
        self._tokens = tokens
        self._token_flights = token_flights
        self._clock = clock
        self._auth_states = {url: RegistryAuthState(name) for url in self.base_urls}

    async def aclose(self) -> None:
        """Close the pooled upstream connections."""
        await self.http.aclose()

    def realm_hosts(self) -> set[str]:
        """Hosts of the token realms this registry's challenges named.

        ``host`` for port 443, else ``host:port``: the way a CONNECT names them.
        """
        hosts = set()
        for state in self._auth_states.values():
            realm = state.challenge.realm if state.challenge is not None else None
            if realm:
                origin = Origin.from_url(realm)
                hosts.add(origin.host if origin.port == 443 else f"{origin.host}:{origin.port}")
        return hosts

    def acting_as(self, credentials: Credentials, principal: str) -> RegistryClient:
        """A client for the same registry that authenticates with ``credentials``.

        It shares this client's connections, remembered challenges and token
        cache (tokens are keyed by credential fingerprint, so never mixed).
        """
        other = copy.copy(self)
        other.credentials = credentials
        other.principal = principal
        return other

    async def request(
        self,
        method: str,
        path: str,
        *,
        scopes: Sequence[Scope],
        headers: Sequence[tuple[str, str]] = (),
    ) -> UpstreamResponse:
        """Send ``method path`` to the registry, with auth, mirrors and redirects.

        Mirrors are tried in order and the next one is used when one cannot be
        reached or answers 5xx or 429; the last URL's answer is returned
        whatever it is. Connection errors of the last URL are raised.
        """
        started = time.monotonic()
        status = "error"
        try:
            response = await self._request(method, path, scopes, headers)
            status = str(response.status)
            return response
        finally:
            _metrics.record_upstream(self.name, status, time.monotonic() - started)

    async def _request(
        self,
        method: str,
        path: str,
        scopes: Sequence[Scope],
        headers: Sequence[tuple[str, str]],
    ) -> UpstreamResponse:
        for index, base_url in enumerate(self.base_urls):
            last = index == len(self.base_urls) - 1
            try:
                try:
                    response = await self._authenticated(base_url, method, path, scopes, headers)
                except (UpstreamConnectError, UpstreamProtocolError) as exc:
                    if not last or method not in ("GET", "HEAD"):
                        raise
                    # Nothing has reached a client yet: one more try rides
                    # out a reset connection or a restarting upstream.
                    log.info("%s: %s failed (%s); retrying once", self.name, base_url, exc)
                    await trio.sleep(RETRY_DELAY)
                    response = await self._authenticated(base_url, method, path, scopes, headers)
            except (UpstreamConnectError, UpstreamTimeoutError, UpstreamProtocolError) as exc:
                if last:
                    raise
                log.warning(
                    "%s: %s unreachable (%s); trying the next upstream", self.name, base_url, exc
                )
                continue
            if not last and is_upstream_outage(response.status):
                log.warning(
                    "%s: %s answered %d; trying the next upstream",
                    self.name,
                    base_url,
                    response.status,
                )
                await response.aclose()
                continue
            return response
        raise AssertionError("unreachable")

    async def _authenticated(
        self,
        base_url: str,
        method: str,
        path: str,
        scopes: Sequence[Scope],
        headers: Sequence[tuple[str, str]],
    ) -> UpstreamResponse:
        state = self._auth_states[base_url]
        negotiation = TokenNegotiation(state, self._tokens, self.credentials, tuple(scopes))
        command: SendRequest | FetchToken | Done | Fail = negotiation.start(self._clock())
        pinged = False
        for _ in range(MAX_AUTH_STEPS):
            if isinstance(command, SendRequest):
                response, redirected = await self._follow(
                    method, base_url + path, headers, command.authorization, base_url
                )
                if redirected:
                    # A CDN's answer is final: its 401/403 is no registry challenge.
                    return response
                www_authenticate = response.header_values("www-authenticate")
                if (
                    response.status == 401
                    and not www_authenticate
                    and not pinged
                    and state.challenge is None
                ):
                    # Some registries (gcr.io once) answer 401 without a
                    # challenge; the /v2/ ping tells which one to use.
                    await response.aclose()
                    pinged = True
                    await self._ping(base_url, state)
                    # The remembered challenge now answers the original 401.
                    command = negotiation.on_response(401, (), self._clock())
                    continue
                command = negotiation.on_response(response.status, www_authenticate, self._clock())
                if isinstance(command, Done):
                    return response
                await response.aclose()
            elif isinstance(command, FetchToken):
                answer = await self._fetch_token(command)
                command = negotiation.on_token_response(answer.status, answer.body, self._clock())
            elif isinstance(command, Fail):
                # The upstream's challenge stays here: relayed, it would send
                # regcache's clients to the upstream's token realm.
                raise AuthError(
                    f"{self.name}: {command.error.message}", code=command.error.code
                ) from command.error
        raise RemoteProtocolError(
            ErrorCode.UPSTREAM_ERROR, f"{self.name}: authentication did not settle"
        )

    async def _ping(self, base_url: str, state: RegistryAuthState) -> None:
        response, _ = await self._follow("GET", base_url + "/v2/", (), None, base_url)
        async with response:
            state.observe(response.status, response.header_values("www-authenticate"))

    async def _fetch_token(self, command: FetchToken) -> TokenAnswer:
        url = command.url()

        async def run() -> TokenAnswer:
            log.debug("%s: fetching a token from %s", self.name, url.split("?")[0])
            _metrics.record_token_fetch(self.name)
            response = await self.http.request("GET", url, command.headers())
            async with response:
                body = await response.read_all(MAX_TOKEN_RESPONSE_SIZE)
            return TokenAnswer(response.status, body)

        return await self._token_flights.fetch(command.key(), run)

    async def _follow(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        authorization: str | None,
        base_url: str,
    ) -> tuple[UpstreamResponse, bool]:
        registry_origin = Origin.from_url(base_url)
        redirected = False
        for _ in range(MAX_REDIRECTS + 1):
            sent = list(headers)
            # The registry's Authorization goes to the registry only: CDN URLs
            # are signed, and S3 refuses a request that has both.
            if authorization is not None and Origin.from_url(url) == registry_origin:
                sent.append(("Authorization", authorization))
            response = await self.http.request(method, url, sent)
            location = response.header("location")
            if response.status in _REDIRECTS and location and method in ("GET", "HEAD"):
                await response.aclose()
                url = resolve_location(url, location)
                redirected = True
                continue
            return response, redirected
        raise RemoteProtocolError(
            ErrorCode.UPSTREAM_ERROR, f"{self.name}: more than {MAX_REDIRECTS} redirects"
        )
