"""Clients' own registry logins inside intercepted tunnels.

In CONNECT mode regcache answers for a registry configured without
credentials, so a client's own credentials must reach regcache. Registry
clients send credentials only to a token realm that a ``/v2/`` challenge
named (containers/image learns challenges from that ping alone; Docker's
client fails on a Basic challenge when it has no credentials), so regcache
serves a token realm of its own on the intercepted host: the client logs in
there with Basic credentials, or anonymously, and gets an opaque token that
stands for them. Tokens are random, kept in memory only, and expire; a client
whose token is unknown (after a restart) gets the challenge again and
fetches a new one, as with any registry.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from regcache.core import Credentials, parse_basic_authorization

#: Where the token realm lives on every intercepted host (outside /v2/).
LOGIN_PATH = "/regcache/token"

#: Token lifetime in seconds; clients fetch a new one when it runs out.
TOKEN_LIFETIME = 300

#: Tokens remembered at most; the oldest are forgotten first (their clients
#: just fetch new ones), so a flood of logins cannot grow memory.
MAX_TOKENS = 10_000


class TunnelLogins:
    """Issues tokens standing for a client's credentials, and resolves them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: OrderedDict[str, tuple[Credentials | None, float]] = OrderedDict()

    @staticmethod
    def challenge(authority: str, registry: str) -> str:
        """The WWW-Authenticate value naming regcache's realm on this host."""
        host = authority.removesuffix(":443")
        return f'Bearer realm="https://{host}{LOGIN_PATH}",service="{registry}"'

    def issue(self, authorization: str | None) -> bytes:
        """A token response for a login with ``authorization`` (Basic, or none)."""
        credentials = _basic(authorization)
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._tokens[token] = (credentials, now + TOKEN_LIFETIME)
        while len(self._tokens) > MAX_TOKENS:
            self._tokens.popitem(last=False)
        body = {"token": token, "access_token": token, "expires_in": TOKEN_LIFETIME}
        return json.dumps(body).encode()

    def identify(self, authorization: str | None) -> tuple[Credentials | None, bool]:
        """The credentials a request stands for, and whether it is recognised.

        No Authorization means anonymous. Basic carries the credentials
        themselves. A Bearer token must be one regcache issued and still
        valid; an unknown one is not recognised (the client must log in again).
        """
        if not authorization:
            return None, True
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            return _basic(authorization), True
        if scheme.lower() != "bearer":
            return None, False
        entry = self._tokens.get(value.strip())
        if entry is None or entry[1] <= self._clock():
            return None, False
        return entry[0], True


def _basic(authorization: str | None) -> Credentials | None:
    credentials = parse_basic_authorization(authorization or "")
    if credentials is None or not credentials.username:
        return None  # a client without credentials
    return credentials
