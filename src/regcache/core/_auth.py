"""Upstream authentication: scopes, tokens, their cache and the token dance.

Follows the distribution "Token Authentication Specification" (a 401 with a
Bearer challenge, ``GET <realm>?service=…&scope=…`` with optional Basic
credentials, a JSON answer with ``token``/``access_token``, ``expires_in`` and
``issued_at``) and "Token Scope Documentation" (``type:name:actions``, where
the name may itself hold a ``host:port`` colon). Registries' deviations that
are handled on purpose: unquoted or missing ``service``, non-repository scopes
such as ECR Public's ``aws``, a realm with its own query string, tokens
without ``expires_in``, and a 401 without ``WWW-Authenticate`` (gcr.io once
did that; the challenge remembered from the ``/v2/`` ping is used instead, as
containers/image does).

:class:`TokenNegotiation` is the token dance as a state machine without I/O:
the driver feeds it upstream responses and token-endpoint answers and carries
out the commands it returns (:class:`SendRequest`, :class:`FetchToken`,
:class:`Done`, :class:`Fail`). All of its transitions are in ``_TRANSITIONS``.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ._challenge import (
    Challenge,
    Credentials,
    RegistryAuthState,
    basic_authorization,
    parse_www_authenticate,
    select_challenge,
)
from ._errors import (
    AuthError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)

#: Lifetime of a token whose response has no ``expires_in`` (token spec).
DEFAULT_TOKEN_LIFETIME: Final = 60.0
#: Shortest lifetime a token is given: the token spec says servers never issue
#: less than 60 s, and containers/image floors at 60 s, so a registry that
#: sends ``expires_in: 10`` does not make us fetch a token per request.
MIN_TOKEN_LIFETIME: Final = 60.0
#: Longest lifetime a token is trusted for. An absurd ``expires_in`` must not
#: pin a token in the cache forever (a revoked one then costs a 401 per use
#: until it ages out) nor overflow the arithmetic.
MAX_TOKEN_LIFETIME: Final = 24 * 3600.0
#: A cached token this close to expiry is not handed out: it could expire
#: between the check and the upstream's own, after clock skew or a slow start.
REFRESH_MARGIN: Final = 10.0
#: Bound on cached tokens: one per (realm, service, scopes, identity), so a
#: flood of distinct repositories would otherwise grow the cache without
#: limit. Least recently used entries go first.
MAX_TOKEN_CACHE_ENTRIES: Final = 1024
#: Largest token-endpoint body parsed. Real ones are a few KiB (a JWT, or a
#: JWT twice under both field names); the driver should stop reading here.
MAX_TOKEN_RESPONSE_SIZE: Final = 1024 * 1024
#: Longest token accepted. It is sent in a header on every upstream request
#: and kept in the cache, so it must stay well under header-size limits.
MAX_TOKEN_LENGTH: Final = 32 * 1024
#: Upstream requests one negotiation may send. Three is enough for every
#: legitimate path (anonymous try, cached token, fresh token) and stops a
#: registry that keeps answering 401 from looping us.
MAX_AUTH_ROUNDS: Final = 3

_WHITESPACE_OR_CONTROL_RE: Final = re.compile(r"[\x00-\x20\x7f]")
# What may go in an Authorization header value: visible ASCII only, so that a
# token can never split or smuggle a header.
_TOKEN_VALUE_RE: Final = re.compile(r"[\x21-\x7e]+")
_RFC3339_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


# ---------------------------------------------------------------------------
# Scopes


def _split_scope(text: str) -> tuple[str, str, str] | None:
    """``(type, name, actions)`` if ``text`` has that shape, else ``None``."""
    resource_type, colon, rest = text.partition(":")
    name, colon2, actions = rest.rpartition(":")
    if colon and colon2 and resource_type and name:
        return resource_type, name, actions
    return None


def _to_actions(actions: Iterable[str]) -> tuple[str, ...]:
    return tuple(actions)


@attrs.frozen
class Scope:
    """A token scope: ``resource_type:name:action[,action…]``.

    A scope that does not have that shape, such as ECR Public's ``aws``, is
    kept *verbatim*: the whole text is in ``resource_type`` and ``name`` is
    empty. Either way ``str(scope)`` gives the text to send.
    """

    resource_type: str
    name: str = ""
    actions: tuple[str, ...] = attrs.field(default=(), converter=_to_actions)

    def __attrs_post_init__(self) -> None:
        parts = (self.resource_type, self.name, *self.actions)
        if not all(isinstance(part, str) for part in parts):
            raise LocalProtocolError("scope parts must be strings")
        if not self.resource_type or any(_WHITESPACE_OR_CONTROL_RE.search(p) for p in parts):
            raise LocalProtocolError("a scope needs a type and no whitespace or control characters")
        if not self.name:
            if self.actions:
                raise LocalProtocolError("a scope with actions needs a resource name")
            if _split_scope(self.resource_type) is not None:
                # Kept apart so that str() and Scope.parse() agree.
                raise LocalProtocolError("a type:name:actions scope cannot be verbatim")
            return
        if ":" in self.resource_type:
            raise LocalProtocolError("a scope's resource type cannot contain ':'")
        if any(not action or ":" in action or "," in action for action in self.actions):
            raise LocalProtocolError("a scope action must be non-empty, without ':' or ','")

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse one scope; anything not ``type:name:actions`` is kept verbatim.

        The type ends at the first colon and the actions start after the
        last one, because the name may contain a ``host:port`` colon. Raises
        ``LocalProtocolError`` for empty text or whitespace in it.
        """
        if not isinstance(text, str) or not text or _WHITESPACE_OR_CONTROL_RE.search(text):
            raise LocalProtocolError("a scope must be non-empty text without whitespace")
        parts = _split_scope(text)
        if parts is None:
            return cls(text)
        resource_type, name, actions = parts
        return cls(resource_type, name, tuple(a for a in actions.split(",") if a))

    @classmethod
    def pull(cls, repository: str) -> Scope:
        """``repository:<repository>:pull``."""
        return cls("repository", repository, ("pull",))

    @property
    def verbatim(self) -> bool:
        """Whether this scope is opaque text rather than ``type:name:actions``."""
        return not self.name

    def __str__(self) -> str:
        if self.verbatim:
            return self.resource_type
        return f"{self.resource_type}:{self.name}:{','.join(self.actions)}"


def merge_scopes(*groups: Iterable[Scope]) -> tuple[Scope, ...]:
    """Merge scopes in first-seen order; one resource's actions are united."""
    merged: dict[tuple[str, str], Scope] = {}
    for group in groups:
        for scope in group:
            key = (scope.resource_type, scope.name)
            known = merged.get(key)
            if known is None:
                merged[key] = scope
            else:
                extra = tuple(a for a in scope.actions if a not in known.actions)
                merged[key] = attrs.evolve(known, actions=known.actions + extra)
    return tuple(merged.values())


def _challenge_scopes(challenge: Challenge, *, verbatim_only: bool) -> tuple[Scope, ...]:
    # Scope texts come out of a parsed challenge, split on whitespace, so
    # they cannot fail to parse.
    texts = challenge.params.get("scope", "").split()
    scopes = tuple(Scope.parse(text) for text in texts)
    return tuple(s for s in scopes if s.verbatim) if verbatim_only else scopes


# ---------------------------------------------------------------------------
# Tokens


def _redact(value: object) -> str:
    return "None" if value is None else "'<redacted>'"


def _redact_credentials(value: str | None) -> str:
    # An Authorization value is "<scheme> <credentials>": the scheme may show.
    if value is None:
        return "None"
    scheme, space, _ = value.partition(" ")
    return f"'{scheme} <redacted>'" if space else "'<redacted>'"


@attrs.frozen
class Token:
    """A Bearer token and when it expires (seconds on the caller's clock).

    ``issued_at`` is the issuer's own timestamp, kept for logs only. Neither
    ``repr`` nor ``str`` shows the token.
    """

    value: str = attrs.field(repr=_redact)
    expires_at: float
    issued_at: float | None = None

    @property
    def authorization(self) -> str:
        """The ``Authorization`` value carrying this token."""
        return f"Bearer {self.value}"

    def usable_at(self, now: float, margin: float = REFRESH_MARGIN) -> bool:
        """Whether the token still has more than ``margin`` seconds to live at ``now``."""
        return now + margin < self.expires_at


def _parse_issued_at(value: object) -> float | None:
    # Only kept for logs: an unreadable issued_at is dropped rather than
    # failing a pull, since expiry never depends on it.
    if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper()).timestamp()
    except (ValueError, OverflowError):
        return None


def parse_token_response(body: bytes, now: float) -> Token:
    """Read a token endpoint's JSON answer, received at ``now``.

    ``token`` is preferred and ``access_token`` is the fall-back (the spec
    leaves the choice undefined when both differ). Expiry counts from
    ``now``, not from ``issued_at``, so a skewed issuer clock cannot make a
    token look expired; the lifetime is ``expires_in`` (60 s when absent)
    clamped to ``MIN_TOKEN_LIFETIME``..``MAX_TOKEN_LIFETIME``. Raises
    ``AuthError`` (``UPSTREAM_ERROR``) for anything malformed; the message
    never contains the token.
    """

    def malformed(reason: str) -> AuthError:
        return AuthError(f"malformed token response: {reason}", code=ErrorCode.UPSTREAM_ERROR)

    if len(body) > MAX_TOKEN_RESPONSE_SIZE:
        raise malformed(f"larger than {MAX_TOKEN_RESPONSE_SIZE} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise malformed("not JSON") from None
    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    value: object = None
    for field in ("token", "access_token"):
        candidate = document.get(field)
        if candidate is None or candidate == "":
            continue
        if not isinstance(candidate, str):
            raise malformed(f"{field} is not a string")
        value = candidate
        break
    if not isinstance(value, str):
        raise malformed("neither token nor access_token is present")
    if len(value) > MAX_TOKEN_LENGTH:
        raise malformed(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    if not _TOKEN_VALUE_RE.fullmatch(value):
        raise malformed("the token has characters not allowed in a header")
    expires_in = document.get("expires_in")
    lifetime: float = DEFAULT_TOKEN_LIFETIME
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise malformed("expires_in is not a number")
        if isinstance(expires_in, float) and not math.isfinite(expires_in):
            raise malformed("expires_in is not finite")
        # Clamped before any float conversion: JSON integers are unbounded.
        lifetime = float(min(max(expires_in, MIN_TOKEN_LIFETIME), MAX_TOKEN_LIFETIME))
    return Token(value, now + lifetime, _parse_issued_at(document.get("issued_at")))


# ---------------------------------------------------------------------------
# Fetching tokens, and caching them


def _realm_problem(realm: str) -> str | None:
    """Why ``realm`` cannot be used as a token endpoint, or ``None``."""
    if _WHITESPACE_OR_CONTROL_RE.search(realm):
        return "has whitespace or control characters"
    try:
        parts = urlsplit(realm)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an absolute http(s) URL"
    return None


def _check_realm(instance: object, attribute: object, value: str) -> None:
    problem = _realm_problem(value)
    if problem is not None:
        raise LocalProtocolError(f"token realm {value[:200]!r} {problem}")


@attrs.frozen
class TokenKey:
    """What a cached token is filed under.

    ``identity`` is ``Credentials.identity`` (a fingerprint, never the
    password) or ``None`` for anonymous tokens.
    """

    realm: str
    service: str | None
    scopes: frozenset[str]
    identity: str | None = attrs.field(repr=False)

    @classmethod
    def of(
        cls,
        realm: str,
        service: str | None,
        scopes: Iterable[Scope],
        credentials: Credentials | None,
    ) -> TokenKey:
        """The key of a token for these parameters."""
        identity = credentials.identity if credentials is not None else None
        return cls(realm, service, frozenset(str(s) for s in scopes), identity)


def _to_scopes(scopes: Iterable[Scope]) -> tuple[Scope, ...]:
    return tuple(scopes)


@attrs.frozen
class FetchToken:
    """Command: GET a token from ``url()`` with ``headers()``, then call
    ``TokenNegotiation.on_token_response``."""

    realm: str = attrs.field(validator=_check_realm)
    service: str | None
    scopes: tuple[Scope, ...] = attrs.field(converter=_to_scopes)
    credentials: Credentials | None = None

    def url(self) -> str:
        """The realm with ``service``, one ``scope`` per scope and ``account``.

        A query string already in the realm (nvcr.io puts a scope there) is
        kept as it is, and a parameter it already has is not repeated.
        """
        parts = urlsplit(self.realm)
        present = set(parse_qsl(parts.query, keep_blank_values=True))
        wanted: list[tuple[str, str]] = []
        if self.service is not None:
            wanted.append(("service", self.service))
        wanted.extend(("scope", str(scope)) for scope in self.scopes)
        if self.credentials is not None:
            # Docker and containers/image name the account; some token
            # servers use it to pick the user before checking the password.
            wanted.append(("account", self.credentials.username))
        added = urlencode([pair for pair in wanted if pair not in present])
        query = "&".join(q for q in (parts.query, added) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def headers(self) -> tuple[tuple[str, str], ...]:
        """Request headers: Basic ``Authorization`` when credentials are set."""
        if self.credentials is None:
            return ()
        return (("Authorization", basic_authorization(self.credentials)),)

    def key(self) -> TokenKey:
        """The cache key of the token this fetches."""
        return TokenKey.of(self.realm, self.service, self.scopes, self.credentials)


def _check_positive(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise LocalProtocolError(f"{attribute.name} must be at least 1")


@attrs.define
class TokenCache:
    """Bearer tokens by ``TokenKey``, bounded, least recently used evicted first."""

    max_entries: int = attrs.field(default=MAX_TOKEN_CACHE_ENTRIES, validator=_check_positive)
    refresh_margin: float = REFRESH_MARGIN
    _entries: OrderedDict[TokenKey, Token] = attrs.field(
        factory=OrderedDict, init=False, repr=False
    )

    def get(self, key: TokenKey, now: float) -> Token | None:
        """The token for ``key`` unless it expires within ``refresh_margin``."""
        token = self._entries.get(key)
        if token is None:
            return None
        if not token.usable_at(now, self.refresh_margin):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return token

    def put(self, key: TokenKey, token: Token) -> None:
        """Store ``token``, evicting the least recently used beyond the bound."""
        self._entries[key] = token
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: TokenKey, token: Token | None = None) -> None:
        """Forget ``key``'s token (only if it is still ``token``, when given).

        The condition keeps a fresh token that a concurrent negotiation
        stored from being dropped because an older one was refused.
        """
        if token is None or self._entries.get(key) == token:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def _lookup(
    registry_state: RegistryAuthState,
    cache: TokenCache,
    credentials: Credentials | None,
    scopes: Sequence[Scope],
    now: float,
) -> tuple[TokenKey | None, Token | None, str | None]:
    challenge = registry_state.challenge
    if challenge is None:
        return None, None, None
    if challenge.scheme == "basic":
        basic = basic_authorization(credentials) if credentials is not None else None
        return None, None, basic
    realm = challenge.realm
    if challenge.scheme != "bearer" or not realm:
        return None, None, None
    merged = merge_scopes(scopes, _challenge_scopes(challenge, verbatim_only=True))
    key = TokenKey.of(realm, challenge.service, merged, credentials)
    token = cache.get(key, now)
    return key, token, token.authorization if token is not None else None


def cached_authorization(
    registry_state: RegistryAuthState,
    cache: TokenCache,
    credentials: Credentials | None,
    scopes: Sequence[Scope],
    now: float,
) -> str | None:
    """The ``Authorization`` for a request to this registry, without a dance.

    A cached Bearer token fitting the remembered challenge and ``scopes``;
    Basic when the remembered challenge is Basic and there are credentials;
    otherwise ``None``. The token cache is keyed by the requested scopes plus
    the remembered challenge's verbatim (non-repository) scopes: repository
    scopes in a remembered challenge belong to whichever request it answered.
    """
    return _lookup(registry_state, cache, credentials, scopes, now)[2]


# ---------------------------------------------------------------------------
# The token dance


@attrs.frozen
class SendRequest:
    """Command: send the upstream request with this ``Authorization`` (none if ``None``),
    then call ``TokenNegotiation.on_response``."""

    authorization: str | None = attrs.field(repr=_redact_credentials)


@attrs.frozen
class Done:
    """Command: the last response is the answer; auth has nothing more to do."""


@attrs.frozen
class Fail:
    """Command: give up and answer with ``error`` (its ``headers`` to be relayed)."""

    error: AuthError


class NegotiationState(enum.Enum):
    """Where a ``TokenNegotiation`` is."""

    IDLE = enum.auto()
    AWAIT_RESPONSE = enum.auto()
    AWAIT_TOKEN = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class _Event(enum.Enum):
    """What an input turned out to mean; the value is ``(input, event)``."""

    STARTED = ("start", "started")
    PASSED = ("on_response", "passed")  # not a 401: the response is the answer
    RETRY = ("on_response", "retry")  # a 401 answered from the cache or with Basic
    TOKEN_NEEDED = ("on_response", "token needed")
    REFUSED = ("on_response", "refused")
    TOKEN_GRANTED = ("on_token_response", "granted")
    TOKEN_REFUSED = ("on_token_response", "refused")

    @property
    def input_name(self) -> str:
        return str(self.value[0])


_S = NegotiationState
_TRANSITIONS: Final[Mapping[tuple[NegotiationState, _Event], NegotiationState]] = MappingProxyType(
    {
        (_S.IDLE, _Event.STARTED): _S.AWAIT_RESPONSE,
        (_S.AWAIT_RESPONSE, _Event.PASSED): _S.DONE,
        (_S.AWAIT_RESPONSE, _Event.RETRY): _S.AWAIT_RESPONSE,
        (_S.AWAIT_RESPONSE, _Event.TOKEN_NEEDED): _S.AWAIT_TOKEN,
        (_S.AWAIT_RESPONSE, _Event.REFUSED): _S.FAILED,
        (_S.AWAIT_TOKEN, _Event.TOKEN_GRANTED): _S.AWAIT_RESPONSE,
        (_S.AWAIT_TOKEN, _Event.TOKEN_REFUSED): _S.FAILED,
    }
)


class _Sent(enum.Enum):
    """Which Authorization the last upstream request carried."""

    NOTHING = enum.auto()
    CACHED_TOKEN = enum.auto()
    FRESH_TOKEN = enum.auto()
    BASIC = enum.auto()


@attrs.define
class TokenNegotiation:
    """The token dance for one upstream request, without I/O.

    Call ``start`` and send the request as told; pass each upstream answer
    to ``on_response`` and each token-endpoint answer to
    ``on_token_response``, and carry out the command returned, until it is
    ``Done`` or ``Fail``. Calling an input the current state does not accept
    raises ``LocalProtocolError``. At most ``max_rounds`` upstream requests
    are made. Shared ``registry_state`` and ``cache`` are updated as it goes.
    """

    registry_state: RegistryAuthState
    cache: TokenCache
    credentials: Credentials | None
    scopes: tuple[Scope, ...] = attrs.field(converter=_to_scopes)
    max_rounds: int = attrs.field(default=MAX_AUTH_ROUNDS, validator=_check_positive)
    _state: NegotiationState = attrs.field(default=NegotiationState.IDLE, init=False)
    _attempts: int = attrs.field(default=0, init=False)
    _sent: _Sent = attrs.field(default=_Sent.NOTHING, init=False)
    _sent_key: TokenKey | None = attrs.field(default=None, init=False, repr=False)
    _sent_token: Token | None = attrs.field(default=None, init=False, repr=False)
    _pending: FetchToken | None = attrs.field(default=None, init=False, repr=False)
    _challenge: Challenge | None = attrs.field(default=None, init=False, repr=False)

    @property
    def state(self) -> NegotiationState:
        """The current state."""
        return self._state

    @property
    def attempts(self) -> int:
        """Upstream requests sent so far."""
        return self._attempts

    def _require(self, input_name: str) -> None:
        if not any(
            state is self._state and event.input_name == input_name for state, event in _TRANSITIONS
        ):
            raise LocalProtocolError(f"{input_name}() is not allowed in state {self._state.name}")

    def _transition(self, event: _Event) -> None:
        next_state = _TRANSITIONS.get((self._state, event))
        if next_state is None:
            raise LocalProtocolError(f"{event.name} is not allowed in state {self._state.name}")
        self._state = next_state

    def _send(
        self,
        event: _Event,
        sent: _Sent,
        authorization: str | None,
        key: TokenKey | None = None,
        token: Token | None = None,
    ) -> SendRequest:
        self._transition(event)
        self._attempts += 1
        self._sent, self._sent_key, self._sent_token = sent, key, token
        return SendRequest(authorization)

    def _fail(self, event: _Event, error: AuthError) -> Fail:
        self._transition(event)
        return Fail(error)

    def _registry(self) -> str:
        return self.registry_state.name or "the upstream registry"

    def _relay(self) -> tuple[tuple[str, str], ...]:
        if self._challenge is None:
            return ()
        return (("WWW-Authenticate", self._challenge.render()),)

    def start(self, now: float) -> SendRequest:
        """Begin: the ``Authorization`` to put on the first upstream request."""
        self._require("start")
        key, token, authorization = _lookup(
            self.registry_state, self.cache, self.credentials, self.scopes, now
        )
        if token is not None:
            sent = _Sent.CACHED_TOKEN
        elif authorization is not None:
            sent = _Sent.BASIC
        else:
            sent = _Sent.NOTHING
        return self._send(_Event.STARTED, sent, authorization, key, token)

    def on_response(
        self, status: int, www_authenticate: Iterable[str | bytes], now: float
    ) -> Done | FetchToken | SendRequest | Fail:
        """Feed the upstream's answer: its status and ``WWW-Authenticate`` values.

        Anything but 401 (a 403 too: the caller relays it) is ``Done``.
        """
        self._require("on_response")
        if status != 401:
            self._transition(_Event.PASSED)
            return Done()
        found = self._read_challenge(www_authenticate)
        if isinstance(found, AuthError):
            return self._fail(_Event.REFUSED, found)
        challenge, from_header = found
        self._challenge = challenge
        if self._sent is _Sent.FRESH_TOKEN:
            return self._fail(_Event.REFUSED, self._refused("answered 401 to a fresh token"))
        if self._sent is _Sent.BASIC:
            return self._fail(_Event.REFUSED, self._refused("refused the Basic credentials"))
        if self._attempts >= self.max_rounds:
            return self._fail(
                _Event.REFUSED, self._refused(f"still answered 401 after {self._attempts} tries")
            )
        if self._sent is _Sent.CACHED_TOKEN and self._sent_key is not None:
            self.cache.discard(self._sent_key, self._sent_token)
        if challenge.scheme == "basic":
            if self.credentials is None:
                return self._fail(
                    _Event.REFUSED, self._refused("asks for Basic credentials; none are set")
                )
            return self._send(_Event.RETRY, _Sent.BASIC, basic_authorization(self.credentials))
        return self._bearer(challenge, from_header=from_header, now=now)

    def _read_challenge(
        self, www_authenticate: Iterable[str | bytes]
    ) -> tuple[Challenge, bool] | AuthError:
        """The challenge to answer and whether this response carried it, or
        the error to fail with when there is none."""
        unreadable: RemoteProtocolError | None = None
        try:
            challenges = parse_www_authenticate(www_authenticate)
        except RemoteProtocolError as error:
            challenges, unreadable = (), error
        challenge = select_challenge(challenges)
        if challenge is not None:
            self.registry_state.remember(challenge)
            return challenge, True
        if challenges:
            schemes = ", ".join(sorted({c.scheme for c in challenges}))
            return AuthError(
                f"{self._registry()} asks for an unsupported authentication scheme ({schemes})",
                code=ErrorCode.UPSTREAM_ERROR,
            )
        # No usable header at all: gcr.io once answered 401 like that, so the
        # challenge remembered from the ping (or an earlier 401) stands in.
        remembered = self.registry_state.challenge
        if remembered is not None:
            return remembered, False
        if unreadable is not None:
            return AuthError(unreadable.message, code=ErrorCode.UPSTREAM_ERROR)
        return AuthError(
            f"{self._registry()} answered 401 without a challenge, and none is known",
            code=ErrorCode.UPSTREAM_ERROR,
        )

    def _bearer(
        self, challenge: Challenge, *, from_header: bool, now: float
    ) -> FetchToken | SendRequest | Fail:
        realm = challenge.realm or ""
        problem = _realm_problem(realm)
        if problem is not None:
            return self._fail(
                _Event.REFUSED,
                AuthError(
                    f"{self._registry()}'s token realm {problem}", code=ErrorCode.UPSTREAM_ERROR
                ),
            )
        challenge_scopes = _challenge_scopes(challenge, verbatim_only=not from_header)
        fetch = FetchToken(
            realm, challenge.service, merge_scopes(self.scopes, challenge_scopes), self.credentials
        )
        key = fetch.key()
        if self._sent is _Sent.NOTHING:
            token = self.cache.get(key, now)
            if token is not None:
                return self._send(_Event.RETRY, _Sent.CACHED_TOKEN, token.authorization, key, token)
        self._transition(_Event.TOKEN_NEEDED)
        self._pending = fetch
        return fetch

    def _refused(self, reason: str) -> AuthError:
        # Credentials that were presented and refused cannot be fixed by the
        # client authenticating to us: that is DENIED. Anonymous refusal is
        # UNAUTHORIZED, with the upstream's challenge to relay.
        if self.credentials is not None and self._sent is not _Sent.NOTHING:
            return AuthError(
                f"{self._registry()} {reason} (with the configured credentials)",
                code=ErrorCode.DENIED,
                headers=self._relay(),
            )
        return AuthError(
            f"{self._registry()} {reason} (anonymously)",
            code=ErrorCode.UNAUTHORIZED,
            headers=self._relay(),
        )

    def on_token_response(self, status: int, body: bytes, now: float) -> SendRequest | Fail:
        """Feed the token endpoint's answer to the last ``FetchToken``."""
        self._require("on_token_response")
        fetch = self._pending
        assert fetch is not None  # AWAIT_TOKEN is only entered with one
        who = "with the configured credentials" if fetch.credentials else "anonymously"
        where = f"token endpoint {fetch.realm}"
        if 200 <= status < 300:
            try:
                token = parse_token_response(body, now)
            except AuthError as malformed:
                return self._fail(
                    _Event.TOKEN_REFUSED,
                    AuthError(f"{where}: {malformed.message}", code=ErrorCode.UPSTREAM_ERROR),
                )
            key = fetch.key()
            self.cache.put(key, token)
            self._pending = None
            return self._send(
                _Event.TOKEN_GRANTED, _Sent.FRESH_TOKEN, token.authorization, key, token
            )
        if status == 401:
            error = AuthError(
                f"{where} refused a token {who}",
                code=ErrorCode.UNAUTHORIZED,
                headers=self._relay(),
            )
        elif status == 403:
            error = AuthError(f"{where} denied a token {who}", code=ErrorCode.DENIED)
        elif status == 429:
            error = AuthError(f"{where} is rate limiting", code=ErrorCode.TOOMANYREQUESTS)
        else:
            error = AuthError(f"{where} answered {status}", code=ErrorCode.UPSTREAM_ERROR)
        return self._fail(_Event.TOKEN_REFUSED, error)
